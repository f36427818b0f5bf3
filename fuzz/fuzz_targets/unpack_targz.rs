//! `model.tar.gz` bytes as the unpacker reads them (gzip, then tar), into a fresh temporary
//! directory with a 1 MiB bound. Whatever it accepts must stay inside that directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The unpacker's own source (the module `sagebrush::artifact::unpack`), compiled into this target.
#[allow(dead_code, unreachable_pub)]
#[path = "../../runtime/src/artifact/unpack.rs"]
mod unpack;

use unpack::unpack_reader;

fuzz_target!(|archive: &[u8]| {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dest = tmp.path().join("model");
    let _ = unpack_reader(archive, &dest, 1 << 20);
});
