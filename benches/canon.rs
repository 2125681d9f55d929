//! Cost of canonicalize + lookup expressions per URL, over a mixed corpus of realistic URLs.
//!
//! Budget (DESIGN §8): 1 µs median per URL. Run with `cargo bench --bench canon`.
//! `mixed/corpus` canonicalizes the whole corpus per iteration: divide by the corpus size for
//! the cost per URL; `url/*` measures each URL alone.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use webrep::canon::canonicalize;

/// (name, url): short, typical, long query strings, IDN, IP hosts, escapes, obfuscations.
const CORPUS: &[(&str, &str)] = &[
    ("short", "http://example.com/"),
    ("short_https", "https://www.example.org/index.html"),
    (
        "typical",
        "https://www.example.com/products/shoes/item?id=12345&color=blue",
    ),
    (
        "deep_path",
        "https://cdn.example.net/static/js/vendor/lib/v2/bundle.min.js",
    ),
    (
        "subdomains",
        "https://a.b.c.d.e.f.example.co.uk/1/2/3/4/5/page.html?x=1",
    ),
    (
        "long_query",
        "https://www.google.com/search?q=url+canonicalization+safe+browsing&rlz=1C1GCEA_enUS\
         &oq=url+canon&gs_lcrp=EgZjaHJvbWUqBggAEEUYOzIGCAAQRRg7MgYIARBFGDkyBggCEEUYPNIBCDMw\
         NjVqMGo3qAIAsAIA&sourceid=chrome&ie=UTF-8",
    ),
    (
        "tracking_query",
        "https://click.example-mail.com/ls/click?upn=u001.aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5z\
         A7bC9dE1fG3hI5jK7lM9nO1pQ3rS5tU7vW9xY1zA3bC5dE7fG9hI1jK3lM5nO7pQ9rS1tU3vW5xY7zA9bC1d\
         &utm_source=newsletter&utm_medium=email&utm_campaign=2026-11-black-friday\
         &redirect=https%3A%2F%2Fshop.example.com%2Fdeals%3Fref%3Dmail%26id%3D42",
    ),
    ("idn", "http://bücher.example/katalog/neu?seite=2"),
    ("idn_upper", "https://MÜNCHEN.example.de/Stadtplan"),
    ("punycode", "http://xn--bcher-kva.example/katalog/"),
    ("ipv4", "http://192.0.2.10/admin/login.php"),
    ("ipv4_decimal", "http://3221225994/admin/"),
    ("ipv4_hex_octal", "http://0xc0.0250.2.012/x"),
    ("ipv6", "http://[2001:db8::1]:8080/status"),
    ("ipv4_mapped", "http://[::ffff:192.0.2.1]/"),
    (
        "escaped_path",
        "http://example.com/%7Euser/My%20Documents/file%2520name.pdf",
    ),
    (
        "dot_segments",
        "http://example.com/a/./b/../c//d/./e/../../f.html",
    ),
    (
        "obfuscated",
        "HTTP://user:pw@WWW.Example.COM.:80/%2e%2e/a/./b#frag",
    ),
    ("port", "http://www.gotaport.com:1234/path/to/thing"),
    ("no_scheme", "www.example.com/path"),
];

fn run(url: &str) -> usize {
    let url = canonicalize(black_box(url)).expect("corpus URLs canonicalize");
    url.expressions().map(|e| e.as_str().len()).sum()
}

fn bench_canon(c: &mut Criterion) {
    let mut mixed = c.benchmark_group("mixed");
    mixed.throughput(Throughput::Elements(CORPUS.len() as u64));
    mixed.bench_function("corpus", |b| {
        b.iter(|| {
            let mut total = 0;
            for &(_, url) in CORPUS {
                total += run(url);
            }
            black_box(total)
        })
    });
    mixed.finish();

    let mut each = c.benchmark_group("url");
    for &(name, url) in CORPUS {
        each.bench_function(name, |b| b.iter(|| black_box(run(url))));
    }
    each.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_canon
}
criterion_main!(benches);
