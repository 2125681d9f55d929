#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from files in the repository (the corpus is not committed):
# the shipped policies and configs, the test feeds (each prefixed with the byte that picks
# its format in the feed_import target) and one feedback batch.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/{canonicalize,feed_import,policy,config,feedback_batch}
i=0
for f in urlhaus.csv domains hosts entries.jsonl sha256.txt malwarebazaar.csv; do
  { printf "\\x$(printf %02x $i)"; cat "../tests/fixtures/feeds/$f"; } >"corpus/feed_import/seed-$f"
  i=$((i + 1))
done
cp ../policies/*.yaml corpus/policy/
cp ../config/webrep.example.yaml ../bench/*.yaml corpus/config/
echo '{"events":[{"v":1,"id":"00000001deadbeef","kind":"blocked","time":1,"proxy":"p1","host":"bad.test","categories":["malware"],"score":5,"url":"http://bad.test/x"}]}' \
  >corpus/feedback_batch/seed-batch.json
grep -v '^#' ../tests/fixtures/canon_vectors.tsv | cut -f2 | grep -v '^$' | head -500 | while IFS= read -r u; do
  printf '%s' "$u" >"corpus/canonicalize/seed-$(printf '%s' "$u" | sha256sum | cut -c1-16)"
done
echo "seeded: $(for d in corpus/*/; do printf '%s %s  ' "$(basename "$d")" "$(ls "$d" | wc -l)"; done)"
