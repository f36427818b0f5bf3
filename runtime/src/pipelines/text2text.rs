//! `text2text-generation` (`generated_text`), `summarization` (`summary_text`) and
//! `translation` / `translation_xx_to_yy` (`translation_text`) on encoder-decoder models (T5,
//! BART, Marian), as transformers 4.51.3's `Text2TextGenerationPipeline` and its subclasses
//! answer (contract §4):
//!
//! - the generation settings are `generation_config.json` (or, without it, the generation keys
//!   of `config.json`), updated with `config.json` `task_specific_params[<task>]` (T5: its
//!   `prefix` is put before every input), then with the request's `parameters`;
//! - `max_length` counts the decoder start token; `max_new_tokens` wins over it; an unchanged
//!   default `max_length` (20) means 20 new tokens, capped by `max_position_embeddings`;
//! - the inputs of a list are one generation request on the generation worker (they share
//!   decoder steps with each other and with concurrent requests: continuous batching, each
//!   answer equal to its input's answer alone, as transformers' pipeline without `batch_size`
//!   gives), greedy, sampling or beam search, and decoded with special tokens skipped and no
//!   clean-up of tokenization spaces;
//! - `"stream": true` (one input, greedy or sampling, one sequence) streams TGI records
//!   (`pipelines::stream`), the last one's `generated_text` being the unstreamed answer's text;
//! - inputs longer than the model's position table (BART, Marian) are truncated to the
//!   tokenizer's `model_max_length` (transformers fails there: see `reference_quirks.jsonl`);
//!   `truncation: false` refuses them with a 400 naming the length instead; `truncation: true`
//!   always truncates to `model_max_length`, as transformers does. T5 (relative positions) is
//!   never truncated by default.
//!
//! A list input answers a list; with `num_return_sequences` > 1 each input's answer is a list.
//! `src_lang` / `tgt_lang` are accepted for translation and, as in transformers, change nothing
//! for tokenizers without language codes (T5, Marian).

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::params::check_names;
use super::stream::{Detokenizer, TokenStream, TokenText, check_streamable};
use super::{Envelope, Pipeline, PipelineError, Result, Task};
use crate::generate::{GenerationConfig, GenerationParams, ParamsError};
use crate::infer::{GenerateSpec, Infer};
use crate::models::ModelConfig;
use crate::models::seq2seq::Seq2SeqIds;
use crate::search::{EncDecProcessors, SearchConfig};
use crate::tokenizer::sentencepiece::MarianTokenizer;
use crate::tokenizer::{EncodeInput, TextTokenizer};

/// The tokenizer of an encoder-decoder model.
#[derive(Debug, Clone)]
pub enum Seq2SeqTokenizer {
    /// `tokenizer.json` (or rebuilt slow files).
    Fast(Arc<TextTokenizer>),
    /// Marian's `source.spm` + `vocab.json`.
    Marian(Arc<MarianTokenizer>),
}

impl Seq2SeqTokenizer {
    /// Marian's tokenizer when the folder has `source.spm` + `vocab.json` and no
    /// `tokenizer.json`; otherwise the fast tokenizer.
    pub fn from_dir(dir: &Path, config: &ModelConfig) -> crate::tokenizer::Result<Self> {
        if !dir.join("tokenizer.json").is_file() && MarianTokenizer::is_marian(dir) {
            return Ok(Self::Marian(Arc::new(MarianTokenizer::from_dir(dir)?)));
        }
        Ok(Self::Fast(Arc::new(TextTokenizer::from_dir(dir, config)?)))
    }

    /// Token ids with the special tokens, untruncated.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Self::Fast(t) => {
                let enc = t
                    .encode_batch(vec![EncodeInput::Single(text.to_owned())], false)
                    .map_err(tokenizer_error)?;
                Ok(enc
                    .first()
                    .map(|e| e.get_ids().to_vec())
                    .unwrap_or_default())
            }
            Self::Marian(t) => Ok(t.encode(text).map_err(tokenizer_error)?.0),
        }
    }

    /// Text of `ids`, special tokens skipped, no clean-up.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Self::Fast(t) => t
                .inner()
                .decode(ids, true)
                .map_err(|source| PipelineError::Tokenizer { source }),
            Self::Marian(t) => Ok(t.decode(ids)),
        }
    }

    /// `model_max_length`, when the tokenizer states one.
    fn max_len(&self) -> Option<usize> {
        match self {
            Self::Fast(t) => Some(t.max_len()),
            Self::Marian(t) => t.model_max_length(),
        }
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        match self {
            Self::Fast(t) => t.pad_id(),
            Self::Marian(t) => t.pad_id(),
        }
    }
}

/// Streamed token texts: the decode of the answers (special tokens skipped).
impl TokenText for Seq2SeqTokenizer {
    fn text(&self, ids: &[u32]) -> String {
        self.decode(ids).unwrap_or_default()
    }

    fn is_special(&self, id: u32) -> bool {
        match self {
            Self::Fast(t) => TokenText::is_special(t.as_ref(), id),
            Self::Marian(t) => t.is_special(id),
        }
    }
}

fn tokenizer_error(e: crate::tokenizer::TokenizerError) -> PipelineError {
    match e {
        crate::tokenizer::TokenizerError::Encode { source }
        | crate::tokenizer::TokenizerError::Build { source, .. } => {
            PipelineError::Tokenizer { source }
        }
        other => PipelineError::Tokenizer {
            source: other.to_string().into(),
        },
    }
}

/// The encoder-decoder processor keys, read from the model's files (leniently, as transformers
/// keeps what it cannot use) into `extra`.
fn overlay_extra(extra: &mut EncDecProcessors, obj: &Map<String, Value>) {
    if let Some(words) = obj
        .get("bad_words_ids")
        .and_then(|v| serde_json::from_value::<Vec<Vec<u32>>>(v.clone()).ok())
    {
        extra.bad_words_ids = words;
    }
    if let Some(id) = obj.get("forced_bos_token_id").and_then(Value::as_u64) {
        extra.forced_bos = Some(id as u32);
    }
    if let Some(id) = obj.get("forced_eos_token_id").and_then(Value::as_u64) {
        extra.forced_eos = Some(id as u32);
    }
}

/// Generation parameters the request may set (read by `generate::GenerationParams`).
const GENERATION_PARAMETERS: &[&str] = &[
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "num_return_sequences",
    "repetition_penalty",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "seed",
];

/// Encoder-decoder processor parameters.
const EXTRA_PARAMETERS: &[&str] = &[
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
];

/// The pipeline's own parameters.
const PIPELINE_PARAMETERS: &[&str] = &[
    "truncation",
    "return_text",
    "return_tensors",
    "clean_up_tokenization_spaces",
];

const TRANSLATION_ONLY: &[&str] = &["src_lang", "tgt_lang"];

/// A boolean parameter, or a 400 naming it.
fn flag(parameters: &Map<String, Value>, name: &str) -> Result<Option<bool>> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(PipelineError::validation(format!(
            "`{name}` must be true or false, got {other}"
        ))),
    }
}

/// The generation pipeline of an encoder-decoder model.
pub struct Text2Text {
    task: Task,
    tokenizer: Seq2SeqTokenizer,
    worker: Infer,
    ids: Seq2SeqIds,
    /// `generation_config.json` (or `config.json`) with `task_specific_params`.
    defaults: GenerationConfig,
    /// The encoder-decoder processors of the same files.
    extra: EncDecProcessors,
    prefix: String,
}

impl Text2Text {
    /// Builds the pipeline: reads `generation_config.json` in `dir` and `task_specific_params`.
    pub fn new(
        task: Task,
        dir: &Path,
        config: &ModelConfig,
        tokenizer: Seq2SeqTokenizer,
        worker: Infer,
        ids: Seq2SeqIds,
    ) -> std::result::Result<Self, ParamsError> {
        let mut defaults = GenerationConfig::from_dir(dir)?;
        let mut extra = EncDecProcessors::default();
        let gen_path = dir.join("generation_config.json");
        let source: Option<Value> = if gen_path.is_file() {
            std::fs::read_to_string(&gen_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        } else {
            Some(config.raw.clone())
        };
        if let Some(obj) = source.as_ref().and_then(Value::as_object) {
            overlay_extra(&mut extra, obj);
        }
        // Special ids a generation_config.json leaves out come from config.json.
        for key in ["eos_token_id", "decoder_start_token_id", "pad_token_id"] {
            if defaults.get(key).is_none()
                && let Some(v) = config.raw.get(key).filter(|v| !v.is_null())
            {
                defaults.set(key, v.clone());
            }
        }
        let mut task = task;
        let mut prefix = String::new();
        if let Some(tsp) = config
            .task_specific_params
            .as_ref()
            .and_then(Value::as_object)
        {
            // `pipeline("translation")` on a model with translation task params takes the
            // first one (transformers' `pipeline()` does this).
            if let Task::Translation {
                src: None,
                tgt: None,
            } = task
                && let Some(parsed) = tsp
                    .keys()
                    .find(|k| k.starts_with("translation"))
                    .and_then(|k| Task::parse(k))
            {
                task = parsed;
            }
            if let Some(params) = tsp.get(&task.to_string()).and_then(Value::as_object) {
                for (key, value) in params {
                    match key.as_str() {
                        "prefix" => prefix = value.as_str().unwrap_or_default().to_owned(),
                        k if EXTRA_PARAMETERS.contains(&k) => {}
                        _ => defaults.set(key, value.clone()),
                    }
                }
                overlay_extra(&mut extra, params);
            }
        }
        Ok(Self {
            task,
            tokenizer,
            worker,
            ids,
            defaults,
            extra,
            prefix,
        })
    }

    /// `generated`, `summary` or `translation`.
    fn return_name(&self) -> &'static str {
        match self.task {
            Task::Summarization => "summary",
            Task::Translation { .. } => "translation",
            _ => "generated",
        }
    }

    /// The search settings of one request: its generation parameters over the defaults
    /// (`generate::GenerationParams`, which makes transformers' checks), and the
    /// encoder-decoder processors.
    fn search_config(&self, parameters: &Map<String, Value>) -> Result<SearchConfig> {
        let generation: Map<String, Value> = parameters
            .iter()
            .filter(|(k, _)| GENERATION_PARAMETERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let params = GenerationParams::resolve(&self.defaults, &generation)?;
        let vocab = self.ids.vocab_size as u32;
        let bad = |m: String| PipelineError::validation(m);
        let mut extra = self.extra.clone();
        let token = |name: &str| -> Result<Option<u32>> {
            match parameters.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(id) if id < u64::from(vocab) => Ok(Some(id as u32)),
                    _ => Err(bad(format!(
                        "`{name}` must be a token id below the vocabulary size {vocab}, got {v}"
                    ))),
                },
            }
        };
        if let Some(id) = token("forced_bos_token_id")? {
            extra.forced_bos = Some(id);
        }
        if let Some(id) = token("forced_eos_token_id")? {
            extra.forced_eos = Some(id);
        }
        if let Some(v) = parameters.get("bad_words_ids").filter(|v| !v.is_null()) {
            extra.bad_words_ids = serde_json::from_value(v.clone()).map_err(|_| {
                bad(format!(
                    "`bad_words_ids` must be a list of lists of token ids, got {v}"
                ))
            })?;
        }
        let eos = &params.eos_token_ids;
        extra
            .bad_words_ids
            .retain(|w| !(w.len() == 1 && eos.contains(&w[0])));
        if let Some(w) = extra
            .bad_words_ids
            .iter()
            .find(|w| w.is_empty() || w.iter().any(|&t| t >= vocab))
        {
            return Err(bad(format!(
                "`bad_words_ids` entry {w:?} is empty or outside the vocabulary of {vocab} tokens"
            )));
        }
        let config = SearchConfig {
            decoder_start_token_id: params
                .decoder_start_token_id
                .unwrap_or(self.ids.decoder_start_token_id),
            params,
            extra,
        };
        let max_length = config.max_length();
        if max_length < 2 {
            return Err(bad(format!(
                "`max_length` must be at least 2 (it counts the decoder start token), got {max_length}"
            )));
        }
        if let Some(limit) = self.ids.max_decoder_positions.filter(|&l| max_length > l) {
            return Err(bad(format!(
                "`max_length` {max_length} is more than the model's {limit} decoder positions"
            )));
        }
        Ok(config)
    }

    /// The source ids of one input, truncated by the policy of the module docs.
    fn source(&self, text: &str, truncation: Option<bool>) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(&format!("{}{text}", self.prefix))?;
        if ids.is_empty() {
            return Err(PipelineError::validation("the input has no tokens"));
        }
        let positions = self.ids.max_encoder_positions;
        let tokenizer_max = self.tokenizer.max_len();
        let limit = match truncation {
            Some(true) => tokenizer_max.or(positions),
            Some(false) => {
                if let Some(p) = positions.filter(|&p| ids.len() > p) {
                    return Err(PipelineError::validation(format!(
                        "the input is {} tokens, more than the model's {p} positions; shorten it or set `truncation: true`",
                        ids.len()
                    )));
                }
                None
            }
            None => positions
                .filter(|&p| ids.len() > p)
                .map(|p| tokenizer_max.map_or(p, |m| m.min(p))),
        };
        Ok(match limit {
            Some(limit) if ids.len() > limit && limit >= 1 => {
                // Keep the head and the closing special token, as the tokenizer's truncation
                // (content cut, special tokens kept) does for one sequence.
                let mut cut = ids[..limit - 1].to_vec();
                cut.push(*ids.last().expect("not empty"));
                cut
            }
            _ => ids,
        })
    }
}

impl Pipeline for Text2Text {
    fn task(&self) -> Task {
        self.task.clone()
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let Prepared {
            sources,
            listed,
            config,
            tensors,
            clean_up,
        } = self.prepare(&request)?;
        let name = self.return_name();
        let n = config.params.num_return_sequences;
        let start = config.decoder_start_token_id;
        let generated = self.worker.generate_all(sources, spec(config))?;
        let mut answers = Vec::with_capacity(generated.len() / n.max(1));
        for hypotheses in generated.chunks(n.max(1)) {
            let mut records = Vec::with_capacity(hypotheses.len());
            for tokens in hypotheses {
                // Answers are the decoder ids, start token first, as transformers returns them.
                let ids: Vec<u32> = std::iter::once(start)
                    .chain(tokens.iter().copied())
                    .collect();
                let mut record = Map::new();
                // transformers: `return_tensors` gives the ids instead of the text.
                if tensors {
                    record.insert(format!("{name}_token_ids"), json!(ids));
                } else {
                    let mut text = self.tokenizer.decode(&ids)?;
                    if clean_up {
                        text = super::fill_mask::clean_up_tokenization(&text);
                    }
                    record.insert(format!("{name}_text"), json!(text));
                }
                records.push(Value::Object(record));
            }
            answers.push(records);
        }
        // transformers flattens a list input's answers when each has one record.
        if listed && answers.iter().all(|a| a.len() == 1) {
            return Ok(Value::Array(answers.into_iter().flatten().collect()));
        }
        if listed {
            return Ok(Value::Array(
                answers.into_iter().map(Value::Array).collect(),
            ));
        }
        Ok(Value::Array(answers.into_iter().next().unwrap_or_default()))
    }

    fn stream(&self, request: Envelope) -> Result<TokenStream> {
        let Prepared {
            mut sources,
            listed,
            config,
            tensors,
            clean_up,
        } = self.prepare(&request)?;
        check_streamable(listed, "input", &config.params)?;
        if tensors {
            return Err(PipelineError::validation(
                "`stream` answers text; `return_tensors` cannot be streamed",
            ));
        }
        let Some(source) = sources.pop() else {
            return Err(PipelineError::validation("`stream` needs one input"));
        };
        let start = config.decoder_start_token_id;
        let text: Arc<dyn TokenText> = Arc::new(self.tokenizer.clone());
        // The answers' text skips special tokens, so the window starts empty (no start token).
        let detok = Detokenizer::with_text(text, &[]);
        let events = self.worker.generate(vec![source], spec(config))?;
        let tokenizer = self.tokenizer.clone();
        let finish = Box::new(move |tokens: &[u32]| {
            let ids: Vec<u32> = std::iter::once(start)
                .chain(tokens.iter().copied())
                .collect();
            let text = tokenizer.decode(&ids).unwrap_or_default();
            json!(if clean_up {
                super::fill_mask::clean_up_tokenization(&text)
            } else {
                text
            })
        });
        Ok(TokenStream::new(events, detok, finish))
    }
}

/// A request, checked and tokenized.
struct Prepared {
    /// The source ids of each input.
    sources: Vec<Vec<u32>>,
    /// Whether `inputs` was a list.
    listed: bool,
    config: SearchConfig,
    /// `return_tensors`.
    tensors: bool,
    /// `clean_up_tokenization_spaces`.
    clean_up: bool,
}

/// The generation request of a search configuration.
fn spec(config: SearchConfig) -> GenerateSpec {
    let SearchConfig {
        mut params,
        decoder_start_token_id,
        extra,
    } = config;
    params.decoder_start_token_id = Some(decoder_start_token_id);
    GenerateSpec {
        params,
        extra,
        ..GenerateSpec::default()
    }
}

impl Text2Text {
    /// Checks the parameters and tokenizes the inputs.
    fn prepare(&self, request: &Envelope) -> Result<Prepared> {
        let mut accepted: Vec<&str> =
            [GENERATION_PARAMETERS, EXTRA_PARAMETERS, PIPELINE_PARAMETERS].concat();
        if matches!(self.task, Task::Translation { .. }) {
            accepted.extend_from_slice(TRANSLATION_ONLY);
        }
        let parameters = &request.parameters;
        check_names(&self.task, &accepted, parameters)?;
        let config = self.search_config(parameters)?;
        let truncation = match parameters.get("truncation") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                super::params::deserialize_truncation(v.clone())
                    .map_err(|e| PipelineError::validation(e.to_string()))?,
            ),
        };
        let tensors = flag(parameters, "return_tensors")?.unwrap_or(false);
        flag(parameters, "return_text")?;
        let clean_up = flag(parameters, "clean_up_tokenization_spaces")?.unwrap_or(false);
        for name in TRANSLATION_ONLY {
            if let Some(v) = parameters
                .get(*name)
                .filter(|v| !v.is_null() && !v.is_string())
            {
                return Err(PipelineError::validation(format!(
                    "`{name}` must be a language code string, got {v}"
                )));
            }
        }
        let (texts, listed) = super::inputs::texts(&self.task, &request.inputs)?;
        let sources = texts
            .iter()
            .map(|input| self.source(input, truncation))
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepared {
            sources,
            listed,
            config,
            tensors,
            clean_up,
        })
    }
}
