//! TAPAS (`model_type` `tapas`), `TapasForQuestionAnswering`: the BERT encoder with seven
//! token-type embeddings (segment, column, row, previous label, column rank, inverse column rank,
//! numeric relation), per-cell position ids, the cell-selection head (token and column logits,
//! averaged over each cell's tokens, cells outside the chosen column masked) and the aggregation
//! head on the pooled output (contract §4, table-question-answering).
//!
//! The encoder layers are BERT's (`bert::Layer`). The heads work on small per-row vectors
//! (`T` tokens, at most `max_num_rows × max_num_columns` cells), so the segment reductions run on
//! the host in f32, in the order torch's `scatter_reduce` sums. Does not tokenize tables
//! (`crate::tokenizer::tapas`) nor turn logits into answers (`crate::pipelines`).
//!
//! Served through the inference core ([`crate::infer::Model`]): the segment id travels as the
//! row's `type_ids` and the six other token types as its `extra_type_ids`, in the order above;
//! the output is one tensor `[B, T, 1 + A]` whose channel 0 is the cell-selection logit of each
//! token and channels `1..` the row's `A` aggregation logits, repeated on every token (so that
//! the core's per-row cut keeps them); [`RowOutput::from_tensor`] reads one row back.
//!
//! Ported from transformers v4.51.3:
//! <https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/tapas/modeling_tapas.py>

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::bert::{self, BERT_NAMES, Flavor};
use super::layers::{self, Linear};
use super::{EncoderBatch, ModelConfig, ModelError, Result, WeightFiles};

/// The number of token-type vectors per token: segment, column, row, previous label, column rank,
/// inverse column rank, numeric relation.
pub const TOKEN_TYPES: usize = 7;

/// `CLOSE_ENOUGH_TO_LOG_ZERO` of modeling_tapas.py.
const LOG_ZERO: f32 = -10000.0;
/// `EPSILON_ZERO_DIVISION` of modeling_tapas.py.
const EPSILON: f32 = 1e-10;

fn default_type_vocab_sizes() -> Vec<usize> {
    vec![3, 256, 256, 2, 256, 256, 10]
}
fn default_true() -> bool {
    true
}
fn default_one() -> f32 {
    1.0
}
fn default_max_rows() -> usize {
    64
}
fn default_max_columns() -> usize {
    32
}

/// The TAPAS keys of `config.json` (`TapasConfig` defaults where a key is absent).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Vocabulary size of each of the seven token-type embeddings.
    #[serde(default = "default_type_vocab_sizes")]
    pub type_vocab_sizes: Vec<usize>,
    /// Positions restart at 0 in each cell.
    #[serde(default = "default_true")]
    pub reset_position_index_per_cell: bool,
    /// Cell selection is restricted to one column (the column head).
    #[serde(default = "default_true")]
    pub select_one_column: bool,
    /// Whether the column head may choose "no column".
    #[serde(default)]
    pub allow_empty_column_selection: bool,
    /// Divides the token logits.
    #[serde(default = "default_one")]
    pub temperature: f32,
    /// Rows beyond this share the last row's cell index in the head.
    #[serde(default = "default_max_rows")]
    pub max_num_rows: usize,
    /// Columns beyond this share the last column's cell index in the head.
    #[serde(default = "default_max_columns")]
    pub max_num_columns: usize,
    /// Size of the aggregation head (0: none).
    #[serde(default)]
    pub num_aggregation_labels: usize,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
}

/// One padded batch for TAPAS; every row has the same length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapasBatch {
    /// Token ids `[B][T]`.
    pub input_ids: Vec<Vec<u32>>,
    /// 1 for real tokens, 0 for padding `[B][T]`.
    pub attention_mask: Vec<Vec<u32>>,
    /// The seven token types of each token `[B][T][7]`.
    pub token_type_ids: Vec<Vec<[u32; TOKEN_TYPES]>>,
}

impl TapasBatch {
    /// The batch the inference core padded: `type_ids` is token type 0 (segment),
    /// `extra_type_ids` the other six, in order.
    pub fn from_encoder_batch(batch: &EncoderBatch) -> Result<Self> {
        let rows = batch.input_ids.len();
        if batch.extra_type_ids.len() != rows || batch.type_ids.len() != rows {
            return Err(ModelError::BadBatch {
                reason: format!(
                    "TAPAS needs {} extra token-type channels for each of the {rows} rows",
                    TOKEN_TYPES - 1
                ),
            });
        }
        let mut token_type_ids = Vec::with_capacity(rows);
        for ((ids, segment), extra) in batch
            .input_ids
            .iter()
            .zip(&batch.type_ids)
            .zip(&batch.extra_type_ids)
        {
            let len = ids.len();
            if extra.len() != TOKEN_TYPES - 1
                || segment.len() != len
                || extra.iter().any(|c| c.len() != len)
            {
                return Err(ModelError::BadBatch {
                    reason: format!(
                        "TAPAS needs a segment id and {} more token types per token",
                        TOKEN_TYPES - 1
                    ),
                });
            }
            let row: Vec<[u32; TOKEN_TYPES]> = (0..len)
                .map(|t| {
                    let mut types = [0; TOKEN_TYPES];
                    types[0] = segment[t];
                    for (k, channel) in extra.iter().enumerate() {
                        types[k + 1] = channel[t];
                    }
                    types
                })
                .collect();
            token_type_ids.push(row);
        }
        Ok(Self {
            input_ids: batch.input_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
            token_type_ids,
        })
    }
}

/// One row of the core's output, read back: what the pipeline needs for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutput {
    /// Cell-selection logit of each token.
    pub logits: Vec<f32>,
    /// The aggregation logits, when the model has the head.
    pub aggregation: Option<Vec<f32>>,
}

impl RowOutput {
    /// Reads `[T, 1 + A]` (one row of [`TapasModel`]'s output through the core).
    pub fn from_tensor(row: &Tensor) -> candle_core::Result<Self> {
        let values: Vec<Vec<f32>> = row.to_dtype(DType::F32)?.to_vec2()?;
        let logits = values.iter().map(|v| v[0]).collect();
        let aggregation = values
            .first()
            .filter(|v| v.len() > 1)
            .map(|v| v[1..].to_vec());
        Ok(Self {
            logits,
            aggregation,
        })
    }
}

impl crate::infer::Model for TapasModel {
    fn forward(&mut self, batch: &EncoderBatch) -> Result<Tensor> {
        let batch = TapasBatch::from_encoder_batch(batch)?;
        let out = Self::forward(self, &batch)?;
        let (rows, len) = (batch.input_ids.len(), batch.input_ids[0].len());
        let aggregation_labels = out.aggregation.as_ref().map_or(0, |a| a[0].len());
        let width = 1 + aggregation_labels;
        let mut data = Vec::with_capacity(rows * len * width);
        for row in 0..rows {
            for t in 0..len {
                data.push(out.logits[row][t]);
                if let Some(aggregation) = &out.aggregation {
                    data.extend_from_slice(&aggregation[row]);
                }
            }
        }
        Ok(Tensor::from_vec(data, (rows, len, width), &self.device)?)
    }

    fn forward_positions(
        &mut self,
        batch: &EncoderBatch,
        positions: &[(usize, usize)],
    ) -> Result<Tensor> {
        let all = crate::infer::Model::forward(self, batch)?;
        let picked = positions
            .iter()
            .map(|&(row, position)| all.get(row)?.get(position))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&picked, 0)?)
    }
}

/// What `TapasForQuestionAnswering` returns, per row of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TapasOutput {
    /// Cell-selection logits per token (after the one-column restriction) `[B][T]`.
    pub logits: Vec<Vec<f32>>,
    /// Aggregation logits `[B][num_aggregation_labels]`, when the model has the head.
    pub aggregation: Option<Vec<Vec<f32>>>,
}

/// `TapasForQuestionAnswering`: encoder, pooler, cell-selection and aggregation heads.
#[derive(Debug)]
pub struct TapasModel {
    cfg: Config,
    word: Embedding,
    position: Embedding,
    token_types: Vec<Embedding>,
    embed_norm: LayerNorm,
    layers: Vec<bert::Layer>,
    pooler: Linear,
    output_weights: Tensor,
    output_bias: f32,
    column_weights: Tensor,
    column_bias: f32,
    aggregation: Option<Linear>,
    device: Device,
}

/// Reads a parameter stored as a scalar (shape `[]` or `[1]`).
fn scalar(vb: &VarBuilder<'_>, name: &str) -> Result<f32> {
    let t = vb.get_unchecked(name)?.flatten_all()?;
    let values = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    match values.as_slice() {
        [v] => Ok(*v),
        _ => Err(ModelError::BadBatch {
            reason: format!("`{name}` must hold one number, has {}", values.len()),
        }),
    }
}

impl TapasModel {
    /// Loads `TapasForQuestionAnswering` weights from `dir`.
    pub fn load(dir: &Path, config: &ModelConfig) -> Result<Self> {
        if config.model_type != "tapas" {
            return Err(ModelError::UnsupportedArchitecture {
                model_type: config.model_type.clone(),
            });
        }
        let files = WeightFiles::find(dir)?;
        let vb = files.var_builder(DType::F32, &Device::Cpu)?;
        Self::from_var_builder(&vb, config)
    }

    /// Builds the model from tensors at hand (state-dict names, on the CPU).
    pub fn from_var_builder(vb: &VarBuilder<'_>, config: &ModelConfig) -> Result<Self> {
        let cfg: Config = config.parse()?;
        if cfg.type_vocab_sizes.len() != TOKEN_TYPES {
            return Err(ModelError::ConfigValue {
                key: "type_vocab_sizes".into(),
                reason: format!(
                    "TAPAS needs {TOKEN_TYPES} sizes, got {}",
                    cfg.type_vocab_sizes.len()
                ),
            });
        }
        let bert_cfg = bert::Config::from_model_config(config, Flavor::Bert)?;
        let h = bert_cfg.hidden_size;
        let base = vb.pp("tapas");
        let e = base.pp("embeddings");
        // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/tapas/modeling_tapas.py#L255
        let token_types = cfg
            .type_vocab_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| candle_nn::embedding(n, h, e.pp(format!("token_type_embeddings_{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let layers = (0..bert_cfg.num_hidden_layers)
            .map(|i| {
                bert::Layer::load(
                    &base.pp(format!("encoder.layer.{i}")),
                    &bert_cfg,
                    &BERT_NAMES,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let aggregation = if cfg.num_aggregation_labels > 0 {
            Some(layers::linear(
                h,
                cfg.num_aggregation_labels,
                vb.pp("aggregation_classifier"),
            )?)
        } else {
            None
        };
        Ok(Self {
            word: candle_nn::embedding(bert_cfg.vocab_size, h, e.pp("word_embeddings"))?,
            position: candle_nn::embedding(
                bert_cfg.max_position_embeddings,
                h,
                e.pp("position_embeddings"),
            )?,
            token_types,
            embed_norm: layers::layer_norm(h, bert_cfg.layer_norm_eps, e.pp("LayerNorm"))?,
            layers,
            pooler: layers::linear(h, h, base.pp("pooler.dense"))?,
            output_weights: vb.get(h, "output_weights")?.reshape((h, 1))?,
            output_bias: scalar(vb, "output_bias")?,
            column_weights: vb.get(h, "column_output_weights")?.reshape((h, 1))?,
            column_bias: scalar(vb, "column_output_bias")?,
            aggregation,
            device: vb.device().clone(),
            cfg,
        })
    }

    /// The model's TAPAS configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Runs the model: per-token cell logits and aggregation logits for each row.
    // https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/tapas/modeling_tapas.py#L1200
    pub fn forward(&self, batch: &TapasBatch) -> Result<TapasOutput> {
        let (rows, len) = check_batch(batch)?;
        let hidden = self.encode(batch, rows, len)?;
        // [B, T, H] · [H, 1] → [B, T], as the einsum "bsj,j->bs" of compute_token_logits.
        let project = |w: &Tensor| -> Result<Vec<Vec<f32>>> {
            Ok(hidden.broadcast_matmul(w)?.squeeze(2)?.to_vec2::<f32>()?)
        };
        let token_raw = project(&self.output_weights)?;
        let column_raw = project(&self.column_weights)?;
        let mut logits = Vec::with_capacity(rows);
        for row in 0..rows {
            let cells = CellIndex::new(&batch.token_type_ids[row], &self.cfg);
            let token_logits: Vec<f32> = token_raw[row]
                .iter()
                .map(|&x| (x + self.output_bias) / self.cfg.temperature)
                .collect();
            let column_logits: Vec<f32> = column_raw[row]
                .iter()
                .map(|&x| x + self.column_bias)
                .collect();
            logits.push(select_cells(
                &token_logits,
                &column_logits,
                &batch.attention_mask[row],
                &cells,
                &self.cfg,
            ));
        }
        let aggregation = match &self.aggregation {
            Some(head) => {
                let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                let pooled = self.pooler.forward(&first)?.tanh()?;
                Some(head.forward(&pooled)?.to_vec2::<f32>()?)
            }
            None => None,
        };
        Ok(TapasOutput {
            logits,
            aggregation,
        })
    }

    /// Embeddings and encoder layers: the last hidden state `[B, T, H]`.
    fn encode(&self, batch: &TapasBatch, rows: usize, len: usize) -> Result<Tensor> {
        let flat = |f: &dyn Fn(usize, usize) -> u32| -> Result<Tensor> {
            let v: Vec<u32> = (0..rows)
                .flat_map(|r| (0..len).map(move |t| (r, t)))
                .map(|(r, t)| f(r, t))
                .collect();
            Ok(Tensor::from_vec(v, (rows, len), &self.device)?)
        };
        let max_pos = self.cfg.max_position_embeddings;
        let positions: Vec<Vec<u32>> = batch
            .token_type_ids
            .iter()
            .map(|types| position_ids(types, self.cfg.reset_position_index_per_cell, max_pos))
            .collect();
        if let Some(&p) = positions.iter().flatten().max()
            && p as usize >= max_pos
        {
            return Err(ModelError::BadBatch {
                reason: format!("position id {p} is beyond `max_position_embeddings` {max_pos}"),
            });
        }
        for (i, &size) in self.cfg.type_vocab_sizes.iter().enumerate() {
            if let Some(bad) = batch
                .token_type_ids
                .iter()
                .flatten()
                .map(|t| t[i])
                .find(|&v| v as usize >= size)
            {
                return Err(ModelError::BadBatch {
                    reason: format!("token type {i} id {bad} is beyond its vocabulary of {size}"),
                });
            }
        }
        let ids = flat(&|r, t| batch.input_ids[r][t])?;
        let pos = flat(&|r, t| positions[r][t])?;
        // BertEmbeddings order: words + positions, then each token type in turn, then LayerNorm.
        let mut xs = (self.word.forward(&ids)? + self.position.forward(&pos)?)?;
        for (i, embedding) in self.token_types.iter().enumerate() {
            let types = flat(&|r, t| batch.token_type_ids[r][t][i])?;
            xs = (xs + embedding.forward(&types)?)?;
        }
        let mut xs = self.embed_norm.forward(&xs)?;
        // transformers `get_extended_attention_mask`: (1 - mask) * finfo(float32).min.
        let additive: Vec<f32> = batch
            .attention_mask
            .iter()
            .flatten()
            .map(|&m| if m == 0 { f32::MIN } else { 0.0 })
            .collect();
        let additive = Tensor::from_vec(additive, (rows, 1, 1, len), &self.device)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &additive)?;
        }
        Ok(xs)
    }
}

fn check_batch(batch: &TapasBatch) -> Result<(usize, usize)> {
    let rows = batch.input_ids.len();
    let len = batch.input_ids.first().map_or(0, Vec::len);
    if rows == 0 || len == 0 {
        return Err(ModelError::BadBatch {
            reason: "no tokens".into(),
        });
    }
    let same = batch.input_ids.iter().all(|r| r.len() == len)
        && batch.attention_mask.len() == rows
        && batch.attention_mask.iter().all(|r| r.len() == len)
        && batch.token_type_ids.len() == rows
        && batch.token_type_ids.iter().all(|r| r.len() == len);
    if !same {
        return Err(ModelError::BadBatch {
            reason: format!(
                "`input_ids`, `attention_mask` and `token_type_ids` must all be {rows} rows of {len}"
            ),
        });
    }
    Ok((rows, len))
}

/// Position ids of one row: `0..T`, or with `reset_position_index_per_cell` each token's distance
/// from the first token of its (column, row) cell, capped at `max_positions - 1`. Question
/// tokens, special tokens and padding share the cell (0, 0), whose first token is `[CLS]`.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/tapas/modeling_tapas.py#L280
pub fn position_ids(
    types: &[[u32; TOKEN_TYPES]],
    reset_per_cell: bool,
    max_positions: usize,
) -> Vec<u32> {
    if !reset_per_cell {
        return (0..types.len() as u32).collect();
    }
    let mut first: std::collections::HashMap<(u32, u32), usize> = std::collections::HashMap::new();
    let cap = max_positions.saturating_sub(1);
    types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let start = *first.entry((t[1], t[2])).or_insert(i);
            (i - start).min(cap) as u32
        })
        .collect()
}

/// Which cell (and column) each token of one row belongs to, as the heads index them: row ids
/// capped at `max_num_rows - 1`, column ids at `max_num_columns - 1`, cell = row × columns + column.
pub(crate) struct CellIndex {
    /// The cell of each token.
    cell_of_token: Vec<usize>,
    num_columns: usize,
    num_cells: usize,
}

impl CellIndex {
    fn new(types: &[[u32; TOKEN_TYPES]], cfg: &Config) -> Self {
        let (rows, columns) = (cfg.max_num_rows.max(1), cfg.max_num_columns.max(1));
        let cell_of_token = types
            .iter()
            .map(|t| {
                let row = (t[2] as usize).min(rows - 1);
                let column = (t[1] as usize).min(columns - 1);
                row * columns + column
            })
            .collect();
        Self {
            cell_of_token,
            num_columns: columns,
            num_cells: rows * columns,
        }
    }

    /// `reduce_mean`: the mean of `values` over each cell's tokens, 0 for empty cells.
    fn mean(&self, values: &[f32]) -> Vec<f32> {
        let mut sums = vec![0f32; self.num_cells];
        let mut counts = vec![0u32; self.num_cells];
        for (&cell, &v) in self.cell_of_token.iter().zip(values) {
            sums[cell] += v;
            counts[cell] += 1;
        }
        sums.iter()
            .zip(&counts)
            .map(|(&s, &n)| if n == 0 { 0.0 } else { s / n as f32 })
            .collect()
    }

    fn column_of_cell(&self, cell: usize) -> usize {
        cell % self.num_columns
    }
}

/// The cell-selection logits of one row: token logits averaged per cell, the column chosen by
/// the column head (`compute_column_logits`, argmax), and every cell outside it pushed to
/// `-10000` (`_single_column_cell_selection_loss` without labels); then gathered back to tokens.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/tapas/modeling_tapas.py#L2062
fn select_cells(
    token_logits: &[f32],
    column_token_logits: &[f32],
    attention_mask: &[u32],
    cells: &CellIndex,
    cfg: &Config,
) -> Vec<f32> {
    let mask: Vec<f32> = attention_mask.iter().map(|&m| m as f32).collect();
    let cell_mask = cells.mean(&mask);
    let cell_logits = cells.mean(token_logits);
    if !cfg.select_one_column {
        // transformers cannot run this configuration without labels (the column head is
        // missing); the token logits are the natural answer.
        return token_logits.to_vec();
    }
    // compute_column_logits
    let column_cell_logits = cells.mean(column_token_logits);
    let n = cells.num_columns;
    let mut column_sum = vec![0f32; n];
    let mut column_count = vec![0f32; n];
    for cell in 0..cells.num_cells {
        let column = cells.column_of_cell(cell);
        column_sum[column] += column_cell_logits[cell] * cell_mask[cell];
        column_count[column] += cell_mask[cell];
    }
    let column_logits: Vec<f32> = (0..n)
        .map(|c| {
            let mut logit = column_sum[c] / (column_count[c] + EPSILON);
            if column_count[c] < 0.5 && c != 0 {
                logit += LOG_ZERO;
            }
            if !cfg.allow_empty_column_selection && c == 0 {
                logit += LOG_ZERO;
            }
            logit
        })
        .collect();
    // torch.argmax: the first of equal maxima.
    let selected = column_logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0;
    let new_cell_logits: Vec<f32> = (0..cells.num_cells)
        .map(|cell| {
            let column = cells.column_of_cell(cell);
            let in_selected = if column == selected && column != 0 {
                1.0
            } else {
                0.0
            };
            cell_logits[cell] + LOG_ZERO * (1.0 - cell_mask[cell] * in_selected)
        })
        .collect();
    cells
        .cell_of_token
        .iter()
        .map(|&c| new_cell_logits[c])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(col_row: &[(u32, u32)]) -> Vec<[u32; TOKEN_TYPES]> {
        col_row
            .iter()
            .map(|&(c, r)| {
                let mut t = [0; TOKEN_TYPES];
                t[0] = u32::from(c > 0);
                t[1] = c;
                t[2] = r;
                t
            })
            .collect()
    }

    #[test]
    fn positions_restart_in_each_cell() {
        // [CLS] q q [SEP] | header 1 (2 tokens) | header 2 | cell (1,1) (3 tokens) | padding
        let t = types(&[
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (1, 0),
            (1, 0),
            (2, 0),
            (1, 1),
            (1, 1),
            (1, 1),
            (0, 0),
        ]);
        assert_eq!(
            position_ids(&t, true, 128),
            vec![0, 1, 2, 3, 0, 1, 0, 0, 1, 2, 10]
        );
        assert_eq!(position_ids(&t, true, 3)[10], 2);
        assert_eq!(position_ids(&t, false, 128)[10], 10);
    }

    /// Cell and aggregation logits equal transformers' on the tapas-tqa fixture (values from
    /// `tests/fixtures/tapas/make_expected.py`), padding included.
    #[test]
    fn logits_equal_transformers() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let dir = root.join("conformance/models/tapas-tqa");
        let config = ModelConfig::from_dir(&dir).unwrap();
        let model = TapasModel::load(&dir, &config).unwrap();
        let text = std::fs::read_to_string(root.join("tapas/expected.json")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        let case = &expected["model"];
        let batch = TapasBatch {
            input_ids: serde_json::from_value(case["input_ids"].clone()).unwrap(),
            attention_mask: serde_json::from_value(case["attention_mask"].clone()).unwrap(),
            token_type_ids: serde_json::from_value(case["token_type_ids"].clone()).unwrap(),
        };
        let out = model.forward(&batch).unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
        for (r, (got, want)) in out.logits.iter().zip(&want).enumerate() {
            assert_eq!(got.len(), want.len());
            for (t, (g, w)) in got.iter().zip(want).enumerate() {
                // Masked cells sit near -10000, where an f32 step is ~1e-3.
                let tol = 1e-4 * w.abs().max(1.0);
                assert!((g - w).abs() <= tol, "row {r} token {t}: {g} != {w}");
            }
        }
        let want: Vec<Vec<f32>> =
            serde_json::from_value(case["logits_aggregation"].clone()).unwrap();
        let got = out.aggregation.unwrap();
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() <= 1e-4, "{g} != {w}");
        }
    }
}
