//! `--dtype` (`SAGEBRUSH_DTYPE`): how the native model's weights are stored (README "Weight
//! types").

use crate::support::{Server, fixture};

/// A model with no bfloat16 kernels refuses `--dtype bfloat16` at load: `/ping` answers 503
/// naming the flag and the architecture, and the server keeps answering.
#[test]
fn a_model_without_bfloat16_kernels_refuses_the_dtype_by_name() {
    let server = Server::builder()
        .model(fixture("t5-t2t"))
        .env("HF_TASK", "text2text-generation")
        .arg("--dtype")
        .arg("bf16")
        .start();
    let message = server.wait_settled().expect_error(503, "model_not_ready");
    assert!(
        message.contains("--dtype bfloat16") && message.contains("`t5`"),
        "{message}"
    );
    assert_eq!(server.get("/ping").status, 503);
}
