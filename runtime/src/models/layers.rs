//! Building blocks shared by the encoder families: activations by their transformers names,
//! linear layers, and multi-head self-attention with one fused Q/K/V projection.

use candle_core::{D, DType, Tensor};
use candle_nn::{Module, VarBuilder};

use super::{ModelError, Result, WeightDtype, bf16, fused, kernels};

/// An activation, named as in transformers `ACT2FN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `gelu`: the exact (erf) GELU.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
    /// `tanh`.
    Tanh,
}

impl Activation {
    /// Maps a transformers activation name.
    pub(crate) fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            "tanh" => Self::Tanh,
            other => {
                return Err(ModelError::UnsupportedActivation {
                    name: other.to_owned(),
                });
            }
        })
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::GeluErf => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::Relu => xs.relu(),
            Self::Silu => xs.silu(),
            Self::Tanh => xs.tanh(),
        }
    }
}

/// `nn.Linear`: `y = x · Wᵀ + b` with `W` `[out, in]` kept contiguous. A few rows (decode steps,
/// short inputs) go through [`kernels::matmul_nt`], which reads the weight once a call; more rows
/// go through candle's matmul, as `candle_nn::Linear` does. A layer made [`packed`](Self::packed)
/// (the decoders of generation) keeps its weight only as [`kernels::Panels`] and runs every
/// product, of any number of rows, with [`kernels::matmul_panels`].
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

#[derive(Clone, Debug)]
enum Weight {
    /// `[out, in]`, contiguous.
    Rows(Tensor),
    /// Packed at load (decoders): products through [`kernels::matmul_panels`].
    Panels(kernels::Panels),
    /// Packed at load as bfloat16 (`--dtype bfloat16`, decoders).
    Bf16Panels(kernels::Bf16Panels),
    /// Rounded to bf16 and packed at load (`--dtype bfloat16`, [`bf16`]).
    Bf16(bf16::Packed),
    /// Packed at load (encoders): products through the fused kernels' [`super::sgemm`].
    Gemm(kernels::Panels),
}

impl Linear {
    /// A layer over `weight` `[out, in]` (made contiguous once, here) and an optional `bias`.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = if weight.is_contiguous() {
            weight
        } else {
            weight.contiguous()?
        };
        Ok(Self {
            weight: Weight::Rows(weight),
            bias,
        })
    }

    /// The same layer with its weight packed as [`kernels::Panels`] (f32 CPU weights; others
    /// stay as they are). The row-major weight is dropped (unless shared, e.g. tied
    /// embeddings).
    pub(crate) fn packed(self) -> Result<Self> {
        let Weight::Rows(w) = &self.weight else {
            return Ok(self);
        };
        if w.dtype() != candle_core::DType::F32 || !w.device().is_cpu() {
            return Ok(self);
        }
        let panels = kernels::Panels::from_tensor(w)?;
        Ok(Self {
            weight: Weight::Panels(panels),
            bias: self.bias,
        })
    }

    /// [`Self::packed`], the weight stored as `dtype`: bfloat16 [`kernels::Bf16Panels`]
    /// (rounded to nearest-even once, here) for [`WeightDtype::Bf16`].
    pub(crate) fn packed_as(self, dtype: WeightDtype) -> Result<Self> {
        match (dtype, &self.weight) {
            (WeightDtype::Bf16, Weight::Rows(w)) if w.device().is_cpu() => Ok(Self {
                weight: Weight::Bf16Panels(kernels::Bf16Panels::from_tensor(w)?),
                bias: self.bias,
            }),
            _ => self.packed(),
        }
    }

    /// The same layer with its weight rounded to bf16 and packed ([`bf16::Packed`]; f32 CPU
    /// weights, row-major or packed for [`super::sgemm`]; others stay as they are). The f32
    /// weight is dropped (unless shared).
    pub(crate) fn into_bf16(self) -> Result<Self> {
        let packed = match &self.weight {
            Weight::Rows(w) if w.dtype() == candle_core::DType::F32 && w.device().is_cpu() => {
                bf16::Packed::from_tensor(w)?
            }
            Weight::Gemm(p) => bf16::Packed::from_panels(p),
            Weight::Rows(_) | Weight::Panels(_) | Weight::Bf16Panels(_) | Weight::Bf16(_) => {
                return Ok(self);
            }
        };
        Ok(Self {
            weight: Weight::Bf16(packed),
            bias: self.bias,
        })
    }

    /// The same layer with its weight packed for the encoders' own matmul
    /// ([`super::sgemm`]), where the CPU has AVX-512 and the weight is f32 on the CPU; otherwise
    /// unchanged (the `gemm` crate then runs it). The row-major weight is dropped.
    pub(crate) fn for_gemm(self) -> Result<Self> {
        let Weight::Rows(w) = &self.weight else {
            return Ok(self);
        };
        if !super::sgemm::available()
            || w.dtype() != candle_core::DType::F32
            || !w.device().is_cpu()
        {
            return Ok(self);
        }
        let panels = kernels::Panels::from_tensor(w)?;
        Ok(Self {
            weight: Weight::Gemm(panels),
            bias: self.bias,
        })
    }

    /// `[out, in]`, unless packed.
    pub(crate) fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            Weight::Rows(w) => Some(w),
            Weight::Panels(_) | Weight::Bf16Panels(_) | Weight::Gemm(_) | Weight::Bf16(_) => None,
        }
    }

    /// `[out]`, if any.
    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Linear {
    /// The weight for the fused kernels, when they take `x` with this layer's parameters (f32
    /// on the CPU; a decoder's panels are not theirs).
    fn fused_weight(&self, x: &Tensor) -> Option<fused::TensorWeight<'_>> {
        let weight = match &self.weight {
            Weight::Rows(w) if fused::applies(&[w]) => fused::TensorWeight::Rows(w),
            Weight::Gemm(p) => fused::TensorWeight::Packed(p),
            Weight::Bf16(p) => fused::TensorWeight::Bf16(p),
            Weight::Rows(_) | Weight::Panels(_) | Weight::Bf16Panels(_) => return None,
        };
        (fused::applies(&[x]) && self.bias.as_ref().is_none_or(|b| fused::applies(&[b])))
            .then_some(weight)
    }

    /// `x · Wᵀ + b + residual`, the residual added inside the matmul (its output starts as
    /// `b + residual`) when the fused kernels apply.
    pub(crate) fn forward_residual(
        &self,
        x: &Tensor,
        residual: &Tensor,
    ) -> candle_core::Result<Tensor> {
        if let Some(w) = self.fused_weight(x)
            && fused::applies(&[residual])
        {
            return fused::linear_tensor_then(x, w, self.bias.as_ref(), Some(residual), |_| ());
        }
        self.forward(x)? + residual
    }

    /// `act(x · Wᵀ + b)`; the exact GELU (encoders) and the tanh GELU (decoders' packed
    /// layers) are applied in place on the matmul's output.
    pub(crate) fn forward_act(&self, x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
        if act == Activation::GeluErf
            && let Some(w) = self.fused_weight(x)
        {
            return fused::linear_tensor_then(x, w, self.bias.as_ref(), None, fused::gelu_erf);
        }
        if act == Activation::GeluTanh
            && x.dtype() == DType::F32
            && x.device().is_cpu()
            && let Some(y) = self.packed_then(x, fused::gelu_tanh)
        {
            return y;
        }
        act.forward(&self.forward(x)?)
    }

    /// `x · Wᵀ + b`, then `then` in place, when the weight is packed as panels (the decoders'
    /// layers); `None` for any other weight.
    fn packed_then(
        &self,
        x: &Tensor,
        then: impl FnOnce(&mut [f32]),
    ) -> Option<candle_core::Result<Tensor>> {
        match &self.weight {
            Weight::Panels(p) => Some(kernels::linear_panels(x, p, self.bias.as_ref(), then)),
            Weight::Bf16Panels(p) => {
                Some(kernels::linear_bf16_panels(x, p, self.bias.as_ref(), then))
            }
            _ => None,
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(w) = self.fused_weight(x) {
            return fused::linear_tensor_then(x, w, self.bias.as_ref(), None, |_| ());
        }
        if let Some(y) = self.packed_then(x, |_| ()) {
            return y;
        }
        let weight = match &self.weight {
            Weight::Panels(_) | Weight::Bf16Panels(_) => unreachable!("packed_then took them"),
            Weight::Bf16(w) => {
                // Not f32 on the CPU: the kernel says so (bf16 layers run on the CPU only).
                return fused::linear_tensor_then(
                    x,
                    fused::TensorWeight::Bf16(w),
                    self.bias.as_ref(),
                    None,
                    |_| (),
                );
            }
            Weight::Gemm(p) => {
                // Not f32 on the CPU (the fused kernels took every other case): as f32 there.
                let x = x.to_dtype(candle_core::DType::F32)?;
                let y = fused::linear_tensor_then(
                    &x.to_device(&candle_core::Device::Cpu)?,
                    fused::TensorWeight::Packed(p),
                    self.bias.as_ref(),
                    None,
                    |_| (),
                )?;
                return y.to_dtype(x.dtype());
            }
            Weight::Rows(w) => w,
        };
        if kernels::linear_applies(x, weight) {
            return kernels::linear(x, weight, self.bias.as_ref());
        }
        // candle_nn::Linear::forward: fold the leading dimensions into rows when contiguous.
        let w = weight.t()?;
        let y = match *x.dims() {
            [b1, b2, m, k] if x.is_contiguous() => x
                .reshape((b1 * b2 * m, k))?
                .matmul(&w)?
                .reshape((b1, b2, m, ()))?,
            [b1, b2, _, _] => x.matmul(&weight.broadcast_left((b1, b2))?.t()?)?,
            [b, m, k] if x.is_contiguous() => {
                x.reshape((b * m, k))?.matmul(&w)?.reshape((b, m, ()))?
            }
            [b, _, _] => x.matmul(&weight.broadcast_left(b)?.t()?)?,
            _ => x.matmul(&w)?,
        };
        match &self.bias {
            None => Ok(y),
            Some(bias) => y.broadcast_add(bias),
        }
    }
}

/// `x · wᵀ` for `w` `[n, k]` (a tied LM head over the embeddings): [`kernels::matmul_nt`] for a
/// few rows, candle's matmul otherwise.
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if fused::applies(&[x, w]) {
        return fused::linear_tensor(x, w, None, None);
    }
    if kernels::linear_applies(x, w) {
        kernels::linear(x, w, None)
    } else {
        x.broadcast_matmul(&w.t()?)
    }
}

/// `nn.Linear(in_dim, out_dim)` with a bias, from `vb` (`weight`, `bias`).
#[allow(clippy::needless_pass_by_value)] // a `VarBuilder` is passed by value, as candle's are
pub(crate) fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder<'_>) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = vb.get(out_dim, "bias")?;
    Linear::new(weight, Some(bias))
}

/// `nn.Linear(in_dim, out_dim, bias=False)` from `vb` (`weight`).
#[allow(clippy::needless_pass_by_value)] // a `VarBuilder` is passed by value, as candle's are
pub(crate) fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder<'_>) -> Result<Linear> {
    Linear::new(vb.get((out_dim, in_dim), "weight")?, None)
}

/// `nn.LayerNorm(dim, eps)` from `vb` (`weight`, `bias`).
pub(crate) fn layer_norm(dim: usize, eps: f64, vb: VarBuilder<'_>) -> Result<candle_nn::LayerNorm> {
    Ok(candle_nn::layer_norm(dim, eps, vb)?)
}

/// Multi-head scaled dot-product self-attention (no output projection): the eager path of
/// transformers' `BertSelfAttention` / DistilBERT `MultiHeadSelfAttention`, with Q, K and V
/// computed by one matmul over the concatenated weights.
#[derive(Clone, Debug)]
pub(crate) struct SelfAttention {
    qkv: Linear,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    /// Loads the three projections named `q`, `k`, `v` under `vb` and fuses them.
    pub(crate) fn load(
        vb: &VarBuilder<'_>,
        names: [&str; 3],
        hidden: usize,
        heads: usize,
    ) -> Result<Self> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(ModelError::ConfigValue {
                key: "num_attention_heads".into(),
                reason: format!("hidden size {hidden} is not a multiple of {heads} heads"),
            });
        }
        let mut weights = Vec::with_capacity(3);
        let mut biases = Vec::with_capacity(3);
        for name in names {
            let l = linear(hidden, hidden, vb.pp(name))?;
            weights.push(
                l.weight()
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("{name} is packed")))?,
            );
            biases.push(
                l.bias()
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("{name} has no bias")))?,
            );
        }
        let weight = Tensor::cat(&weights, 0)?;
        let bias = Tensor::cat(&biases, 0)?;
        Ok(Self {
            qkv: Linear::new(weight, Some(bias))?.for_gemm()?,
            heads,
            head_dim: hidden / heads,
        })
    }

    /// The same attention with its Q/K/V projection in bf16 ([`Linear::into_bf16`]).
    pub(crate) fn into_bf16(self) -> Result<Self> {
        Ok(Self {
            qkv: self.qkv.into_bf16()?,
            ..self
        })
    }

    /// `xs` `[B, T, H]`, `additive_mask` `[B, 1, 1, T]` → context `[B, T, H]`.
    pub(crate) fn forward(&self, xs: &Tensor, additive_mask: &Tensor) -> Result<Tensor> {
        let (b, t, hidden) = xs.dims3()?;
        let qkv = self.qkv.forward(xs)?;
        if fused::applies(&[&qkv, additive_mask]) && additive_mask.elem_count() == b * t {
            // One pass per (row, head) over the projection's output: no split copies.
            let scale = (1.0 / (self.head_dim as f64).sqrt()) as f32;
            let mask = additive_mask.contiguous()?;
            let context = {
                let (qs, ql) = qkv.storage_and_layout();
                let (ms, ml) = mask.storage_and_layout();
                fused::attention(
                    kernels::f32_slice(&qs, ql, "qkv")?,
                    b,
                    t,
                    self.heads,
                    self.head_dim,
                    kernels::f32_slice(&ms, ml, "mask")?,
                    scale,
                )
            };
            return Ok(Tensor::from_vec(context, (b, t, hidden), xs.device())?);
        }
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, i * hidden, hidden)?
                .reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        // Scaling q before the product (as DistilBERT does; BERT scales the scores) is the same
        // number for power-of-two head sizes and costs T·H instead of heads·T² multiplications.
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let q = (split(0)? * scale)?;
        let k = split(1)?;
        let v = split(2)?;
        let scores = q.matmul(&k.t()?)?;
        let scores = scores.broadcast_add(additive_mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(&v)?;
        Ok(context.transpose(1, 2)?.reshape((b, t, hidden))?)
    }
}
