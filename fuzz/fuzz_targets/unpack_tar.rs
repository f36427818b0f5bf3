//! A plain tar stream: the input is gzip-compressed first, so every input reaches the tar
//! reader (the `unpack_targz` target spends most inputs on gzip headers). 1 MiB bound.
#![no_main]

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
// The unpacker's own source (the module `sagebrush::artifact::unpack`), compiled into this target.
#[allow(dead_code, unreachable_pub)]
#[path = "../../runtime/src/artifact/unpack.rs"]
mod unpack;

use unpack::unpack_reader;

fuzz_target!(|tar: &[u8]| {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(tar).expect("gzip in memory");
    let archive = gz.finish().expect("gzip in memory");
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dest = tmp.path().join("model");
    let _ = unpack_reader(archive.as_slice(), &dest, 1 << 20);
});
