//! The annotated example config documents every key with its default value.

use webrep::config::RawConfig;

fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(p.clone());
            key_paths(v, &p, out);
        }
    }
}

#[test]
fn example_config_has_every_key_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/webrep.example.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    // It parses (unknown keys would fail) and equals the built-in defaults...
    let parsed: RawConfig = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        parsed,
        RawConfig::default(),
        "example and defaults disagree"
    );
    // ...and spells out every key, so nothing is undocumented.
    let as_value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut have = Vec::new();
    key_paths(&as_value, "", &mut have);
    let mut want = Vec::new();
    key_paths(
        &serde_json::to_value(RawConfig::default()).unwrap(),
        "",
        &mut want,
    );
    let missing: Vec<_> = want.iter().filter(|k| !have.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    webrep::config::Config::load(Some(std::path::Path::new(path))).unwrap();
}
