//! Unsafe `model.tar.gz` archives given to the server: each is refused at load, `/ping` says
//! 503 naming the entry, and the cause is logged.

use std::io::Write;

use crate::support::Server;

fn raw_archive(
    path: &std::path::Path,
    name: &str,
    kind: tar::EntryType,
    data: &[u8],
    link: Option<&str>,
) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut cfg = tar::Header::new_gnu();
    cfg.set_path("config.json").unwrap();
    cfg.set_size(2);
    cfg.set_mode(0o644);
    cfg.set_cksum();
    builder.append(&cfg, &b"{}"[..]).unwrap();
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_cksum();
    builder.append(&header, data).unwrap();
    builder
        .into_inner()
        .unwrap()
        .finish()
        .unwrap()
        .flush()
        .unwrap();
}

#[test]
fn each_unsafe_archive_is_refused_naming_the_entry() {
    type Case<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>, &'a str);
    let cases: [Case<'_>; 6] = [
        (
            "/abs/evil.txt",
            tar::EntryType::Regular,
            b"x",
            None,
            "absolute path",
        ),
        (
            "../evil.txt",
            tar::EntryType::Regular,
            b"x",
            None,
            "escapes",
        ),
        (
            "sym",
            tar::EntryType::Symlink,
            b"",
            Some("../../etc/passwd"),
            "symbolic link",
        ),
        (
            "hard",
            tar::EntryType::Link,
            b"",
            Some("/etc/passwd"),
            "hard link",
        ),
        ("dev", tar::EntryType::Block, b"", None, "block device"),
        (
            "big.bin",
            tar::EntryType::Regular,
            &[0u8; 3 * 1024 * 1024],
            None,
            "limit",
        ),
    ];
    for (name, kind, data, link, words) in cases {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("model.tar.gz");
        raw_archive(&archive, name, kind, data, link);
        let server = Server::builder()
            .model(&archive)
            .arg("--max-unpacked-mb")
            .arg("2")
            .start();
        let message = server.wait_settled().expect_error(503, "model_not_ready");
        assert!(
            message.contains(name) && message.contains(words),
            "{name}: {message}"
        );
        assert!(
            server.logs().contains("model failed to load"),
            "{}",
            server.logs()
        );
        assert!(!dir.path().join("evil.txt").exists());
    }
}
