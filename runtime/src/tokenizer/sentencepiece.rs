//! SentencePiece in Rust: the `.model` file (a protobuf `ModelProto`) read by a small
//! hand-written protobuf reader, and a `tokenizers` [`Tokenizer`] built from it that segments as
//! the `sentencepiece` library's unigram model does: the normalizer spec's precompiled charsmap
//! (NFKC for `nmt_nfkc`), extra whitespace removed, whitespace → `▁` with a dummy prefix, then
//! Viterbi over the pieces' scores (`tokenizers`' [`Unigram`], built from the (piece, score)
//! pairs). Ids equal those of transformers' slow `T5Tokenizer` (`spiece.model`); see
//! `tests/fixtures/sentencepiece/`.
//!
//! [`MarianTokenizer`] is transformers' `MarianTokenizer`: Marian models ship no
//! `tokenizer.json`, only `source.spm` / `target.spm` (segmentation) and `vocab.json` (the ids the
//! model reads): pieces from the source model, ids from the vocabulary (unknown pieces are
//! `<unk>`), `</s>` appended; decoding maps ids back to pieces and joins them as the target
//! model's `decode_pieces` does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::precompiled::Precompiled;
use tokenizers::normalizers::replace::{Replace, ReplacePattern};
use tokenizers::normalizers::strip::Strip;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{NormalizerWrapper, Tokenizer};

use super::{Result, TokenizerError};

/// The kind of a piece (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// A normal piece.
    Normal,
    /// `<unk>`.
    Unknown,
    /// A control symbol (`<s>`, `</s>`, `<pad>`): never produced from text.
    Control,
    /// A user-defined symbol: always one piece.
    UserDefined,
    /// Unused.
    Unused,
    /// A byte-fallback piece `<0xAB>`.
    Byte,
}

impl PieceKind {
    fn from_proto(v: u64) -> Self {
        match v {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece text (`▁` marks a leading space).
    pub piece: String,
    /// Its log probability.
    pub score: f32,
    /// Its kind.
    pub kind: PieceKind,
}

/// `ModelProto.normalizer_spec`.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    /// Rule name, e.g. `nmt_nfkc`.
    pub name: String,
    /// The compiled normalization rules (empty: identity).
    pub precompiled_charsmap: Vec<u8>,
    /// Prepend `▁` to the text.
    pub add_dummy_prefix: bool,
    /// Strip leading/trailing whitespace and collapse runs of it.
    pub remove_extra_whitespaces: bool,
    /// Replace spaces with `▁`.
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The fields of `ModelProto.trainer_spec` that tokenization needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    /// 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    /// Id of `<unk>`.
    pub unk_id: i64,
    /// Unknown characters become byte pieces.
    pub byte_fallback: bool,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: 1,
            unk_id: 0,
            byte_fallback: false,
        }
    }
}

/// A parsed SentencePiece model file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpModel {
    /// The vocabulary, id order.
    pub pieces: Vec<Piece>,
    /// How text is normalized.
    pub normalizer: NormalizerSpec,
    /// Training settings that tokenization needs.
    pub trainer: TrainerSpec,
}

/// Whether `spm_precompiled` can use a `precompiled_charsmap` (a u32 trie size in bytes, the
/// double-array trie, then the replacement strings) without indexing out of bounds: it checks
/// neither the trie nor the strings, and panics on the first text that walks off the trie or
/// lands inside a character. Every node its search can reach, with any byte, must be inside
/// the trie, and every replacement must start at a character of the strings. (Found by the
/// `spm_model` fuzz target; SentencePiece's own charsmaps pass in a few milliseconds.)
fn check_charsmap(charsmap: &[u8]) -> std::result::Result<(), String> {
    let size = charsmap
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b) as usize / 4)
        .ok_or("it is shorter than its header")?;
    let body = &charsmap[4..];
    let trie_bytes = size
        .checked_mul(4)
        .filter(|&n| n <= body.len())
        .ok_or("its trie runs past its end")?;
    let trie: Vec<usize> = body[..trie_bytes]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let normalized =
        std::str::from_utf8(&body[trie_bytes..]).map_err(|_| "its strings are not UTF-8")?;
    let offset = |u: usize| (u >> 10) << ((u & (1 << 9)) >> 6);
    let root = *trie.first().ok_or("its trie is empty")?;
    let mut seen = HashSet::new();
    let mut stack = vec![offset(root)];
    while let Some(pos) = stack.pop() {
        if !seen.insert(pos) {
            continue;
        }
        for byte in 1..=255usize {
            let at = pos ^ byte;
            let unit = *trie
                .get(at)
                .ok_or_else(|| format!("its trie reaches unit {at} of {}", trie.len()))?;
            if unit & ((1 << 31) | 0xff) != byte {
                continue;
            }
            let next = at ^ offset(unit);
            if (unit >> 8) & 1 == 1 {
                let leaf = *trie
                    .get(next)
                    .ok_or_else(|| format!("its trie reaches unit {next} of {}", trie.len()))?;
                let value = leaf & ((1 << 31) - 1);
                if !normalized.is_char_boundary(value) {
                    return Err(format!(
                        "a replacement starts at byte {value}, not a character of its strings"
                    ));
                }
            }
            stack.push(next);
        }
    }
    Ok(())
}

/// A protobuf field value.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads the fields of one protobuf message, in order.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or("truncated varint at the end of the message")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end at byte {}", self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn next_field(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            wire => return Err(format!("unsupported protobuf wire type {wire}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

impl SpModel {
    /// Reads a `.model` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes).map_err(|message| TokenizerError::Build {
            path: path.to_path_buf(),
            source: format!("not a SentencePiece model: {message}").into(),
        })
    }

    /// Parses the bytes of a `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut model = Self {
            pieces: Vec::new(),
            normalizer: NormalizerSpec::default(),
            trainer: TrainerSpec::default(),
        };
        let mut reader = Reader::new(bytes);
        while let Some((number, value)) = reader.next_field()? {
            match (number, value) {
                (1, Field::Bytes(b)) => model.pieces.push(parse_piece(b)?),
                (2, Field::Bytes(b)) => model.trainer = parse_trainer(b)?,
                (3, Field::Bytes(b)) => model.normalizer = parse_normalizer(b)?,
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err("no pieces".into());
        }
        if model.trainer.model_type != 1 {
            return Err(format!(
                "model type {} is not unigram (only unigram models are supported)",
                model.trainer.model_type
            ));
        }
        Ok(model)
    }

    /// The id of `<unk>`.
    pub fn unk_id(&self) -> Option<usize> {
        usize::try_from(self.trainer.unk_id)
            .ok()
            .filter(|&id| id < self.pieces.len())
            .or_else(|| {
                self.pieces
                    .iter()
                    .position(|p| p.kind == PieceKind::Unknown)
            })
    }

    /// A `tokenizers` tokenizer that segments as SentencePiece does (no special tokens added:
    /// the caller's template adds them). Offsets are into the original text.
    pub fn tokenizer(&self) -> Result<Tokenizer, tokenizers::Error> {
        let vocab = self
            .pieces
            .iter()
            .map(|p| (p.piece.clone(), f64::from(p.score)))
            .collect();
        let unigram = Unigram::from(vocab, self.unk_id(), self.trainer.byte_fallback)?;
        let mut tokenizer = Tokenizer::new(unigram);
        let spec = &self.normalizer;
        let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
        if !spec.precompiled_charsmap.is_empty() {
            check_charsmap(&spec.precompiled_charsmap).map_err(|reason| {
                format!("the normalizer's precompiled_charsmap cannot be used: {reason}")
            })?;
            normalizers.push(Precompiled::from(&spec.precompiled_charsmap)?.into());
        }
        if spec.remove_extra_whitespaces {
            normalizers.push(Strip::new(true, true).into());
            normalizers.push(Replace::new(ReplacePattern::Regex(" {2,}".into()), " ")?.into());
        }
        tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers)))?;
        let prepend = if spec.add_dummy_prefix {
            PrependScheme::Always
        } else {
            PrependScheme::Never
        };
        tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', prepend, true)));
        tokenizer.with_decoder(Some(MetaspaceDecoder::new('▁', prepend, true)));
        Ok(tokenizer)
    }
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        match (number, value) {
            (1, Field::Bytes(b)) => piece.piece = utf8(b, "a piece")?,
            (2, Field::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Field::Varint(v)) => piece.kind = PieceKind::from_proto(v),
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer(bytes: &[u8]) -> Result<TrainerSpec, String> {
    let mut spec = TrainerSpec::default();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        match (number, value) {
            (3, Field::Varint(v)) => spec.model_type = v,
            (35, Field::Varint(v)) => spec.byte_fallback = v != 0,
            // int32: negative values are sign-extended 10-byte varints.
            (40, Field::Varint(v)) => spec.unk_id = v as i64,
            _ => {}
        }
    }
    Ok(spec)
}

fn parse_normalizer(bytes: &[u8]) -> Result<NormalizerSpec, String> {
    let mut spec = NormalizerSpec::default();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        match (number, value) {
            (1, Field::Bytes(b)) => spec.name = utf8(b, "the normalizer name")?,
            (2, Field::Bytes(b)) => spec.precompiled_charsmap = b.to_vec(),
            (3, Field::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Field::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Field::Varint(v)) => spec.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(spec)
}

/// Token ids and their char offsets.
pub type IdsAndOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// transformers' `MarianTokenizer` (slow: Marian ships no fast tokenizer).
#[derive(Debug, Clone)]
pub struct MarianTokenizer {
    source: Tokenizer,
    vocab: HashMap<String, u32>,
    pieces: Vec<String>,
    unk_id: u32,
    eos_id: u32,
    pad_id: u32,
    special: HashSet<u32>,
    model_max_length: Option<usize>,
}

impl MarianTokenizer {
    /// Whether `dir` holds a Marian tokenizer (`source.spm` + `vocab.json`).
    pub fn is_marian(dir: &Path) -> bool {
        dir.join("source.spm").is_file() && dir.join("vocab.json").is_file()
    }

    /// Loads `source.spm`, `vocab.json` and the special tokens of `tokenizer_config.json`
    /// (`unk_token`, `eos_token`, `pad_token`; transformers' defaults `<unk>`, `</s>`, `<pad>`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let spm_path = dir.join("source.spm");
        let source = SpModel::from_file(&spm_path)?
            .tokenizer()
            .map_err(|source| TokenizerError::Build {
                path: spm_path.clone(),
                source,
            })?;
        let vocab_path = dir.join("vocab.json");
        let text = std::fs::read_to_string(&vocab_path).map_err(|source| TokenizerError::Read {
            path: vocab_path.clone(),
            source,
        })?;
        let vocab: HashMap<String, u32> =
            serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
                path: vocab_path.clone(),
                source,
            })?;
        let size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        let mut pieces = vec![String::new(); size];
        for (piece, &id) in &vocab {
            pieces[id as usize].clone_from(piece);
        }
        let config = super::TokenizerConfig::from_dir(dir)?;
        let id_of = |key: &str, default: &str| -> Result<u32> {
            let token = config.special(key).unwrap_or(default);
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| TokenizerError::UnknownSpecialToken {
                    key: key.to_owned(),
                    token: token.to_owned(),
                })
        };
        let unk_id = id_of("unk_token", "<unk>")?;
        let eos_id = id_of("eos_token", "</s>")?;
        let pad_id = id_of("pad_token", "<pad>")?;
        let model_max_length = config
            .model_max_length
            .filter(|&m| m.is_finite() && m > 0.0 && m < super::VERY_LARGE)
            .map(|m| m as usize);
        Ok(Self {
            source,
            vocab,
            pieces,
            unk_id,
            eos_id,
            pad_id,
            special: [unk_id, eos_id, pad_id].into_iter().collect(),
            model_max_length,
        })
    }

    /// Path-free constructor check used by errors.
    fn error(e: tokenizers::Error) -> TokenizerError {
        TokenizerError::Build {
            path: PathBuf::from("source.spm"),
            source: e,
        }
    }

    /// Token ids of `text` with `</s>` appended, and each token's char offsets in `text`
    /// (`(0, 0)` for `</s>`). A leading language code `>>xx<<` is one token, as in transformers.
    pub fn encode(&self, text: &str) -> Result<IdsAndOffsets> {
        let mut ids = Vec::new();
        let mut offsets = Vec::new();
        let (code, rest, shift) = split_language_code(text);
        if let Some(code) = code {
            ids.push(self.vocab.get(code).copied().unwrap_or(self.unk_id));
            offsets.push((0, code.chars().count()));
        }
        let encoding = self
            .source
            .encode_char_offsets(rest, false)
            .map_err(Self::error)?;
        for (token, &(start, end)) in encoding.get_tokens().iter().zip(encoding.get_offsets()) {
            ids.push(self.vocab.get(token).copied().unwrap_or(self.unk_id));
            offsets.push((start + shift, end + shift));
        }
        ids.push(self.eos_id);
        offsets.push((0, 0));
        Ok((ids, offsets))
    }

    /// The text of `ids`, special tokens skipped: pieces joined, `▁` as spaces, trimmed
    /// (`MarianTokenizer.decode(ids, skip_special_tokens=True)`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for &id in ids {
            if self.special.contains(&id) {
                continue;
            }
            match self.pieces.get(id as usize) {
                Some(piece) if !piece.is_empty() => out.push_str(piece),
                _ => {}
            }
        }
        out.replace('▁', " ").trim().to_owned()
    }

    /// Whether `id` is one of the special tokens `decode` skips.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// `</s>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// `<pad>`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// `tokenizer_config.json` `model_max_length`, when set.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }
}

/// `>>de<< text` → (`Some(">>de<<")`, `" text"`, chars before the rest), as
/// `MarianTokenizer.remove_language_code` (regex `>>.+<<` at the start).
fn split_language_code(text: &str) -> (Option<&str>, &str, usize) {
    if let Some(rest) = text.strip_prefix(">>")
        && let Some(end) = rest.rfind("<<").filter(|&e| e > 0)
    {
        let code_end = 2 + end + 2;
        let code = &text[..code_end];
        return (Some(code), &text[code_end..], code.chars().count());
    }
    (None, text, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_varints_fixed32_and_bytes() {
        // field 1 bytes "ab", field 2 fixed32 1.5, field 3 varint 300
        let mut buf = vec![0x0a, 2, b'a', b'b', 0x15];
        buf.extend_from_slice(&1.5f32.to_le_bytes());
        buf.extend_from_slice(&[0x18, 0xac, 0x02]);
        let piece = parse_piece(&buf).unwrap();
        assert_eq!(piece.piece, "ab");
        assert_eq!(piece.score, 1.5);
        assert_eq!(piece.kind, PieceKind::Normal);
        let mut r = Reader::new(&buf);
        let mut numbers = Vec::new();
        while let Some((n, v)) = r.next_field().unwrap() {
            if let Field::Varint(x) = v {
                assert_eq!(x, 300);
            }
            numbers.push(n);
        }
        assert_eq!(numbers, [1, 2, 3]);
    }

    /// Found by the `spm_model` fuzz target: a charsmap whose trie is empty loaded, then the
    /// first text panicked inside `spm_precompiled`.
    #[test]
    fn a_charsmap_with_an_empty_trie_is_refused_at_load() {
        let piece = |piece: &str, kind| Piece {
            piece: piece.into(),
            score: -1.0,
            kind,
        };
        let model = SpModel {
            pieces: vec![
                piece("<unk>", PieceKind::Unknown),
                piece("a", PieceKind::Normal),
            ],
            normalizer: NormalizerSpec {
                precompiled_charsmap: vec![0, 0, 0, 0, 0, 0, 2, 2, 2, b'U'],
                ..NormalizerSpec::default()
            },
            trainer: TrainerSpec::default(),
        };
        let err = model.tokenizer().unwrap_err();
        assert!(err.to_string().contains("its trie is empty"), "{err}");
        // One unit, whose children (any byte) lie outside the trie.
        let walks_off = [4, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            check_charsmap(&walks_off),
            Err("its trie reaches unit 1 of 1".to_owned())
        );
        // A replacement that starts inside a character of the strings ("é" is two bytes): the
        // root leads to block 256, byte `a` there to a leaf at 512 whose value is 1.
        let charsmap = |leaf: u32| {
            let mut units = vec![0u32; 768];
            units[0] = 256 << 10;
            units[256 ^ 97] = (865 << 10) | (1 << 8) | 97;
            units[512] = leaf;
            let mut bytes = (768u32 * 4).to_le_bytes().to_vec();
            for unit in units {
                bytes.extend(unit.to_le_bytes());
            }
            bytes.extend("é\0".as_bytes());
            bytes
        };
        let inside = check_charsmap(&charsmap(1));
        assert!(
            inside
                .as_ref()
                .is_err_and(|e| e.contains("not a character")),
            "{inside:?}"
        );
        assert_eq!(check_charsmap(&charsmap(0)), Ok(()));
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        assert!(SpModel::parse(&[0x0a, 10, b'a']).is_err());
        assert!(SpModel::parse(&[0x08, 0x80]).is_err());
        assert!(SpModel::parse(&[]).is_err());
    }

    #[test]
    fn language_codes_are_split_off() {
        assert_eq!(
            split_language_code(">>de<< Hallo"),
            (Some(">>de<<"), " Hallo", 6)
        );
        assert_eq!(split_language_code("Hallo"), (None, "Hallo", 0));
        assert_eq!(split_language_code(">><<x"), (None, ">><<x", 0));
    }
    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
    }

    fn expected() -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(fixtures().join("sentencepiece/expected.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["cases"].as_array().unwrap().clone()
    }

    fn ids(v: &serde_json::Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    #[test]
    fn t5_spiece_model_gives_the_slow_t5_tokenizer_ids() {
        let model =
            SpModel::from_file(&fixtures().join("conformance/models/t5-t2t/spiece.model")).unwrap();
        assert_eq!(model.normalizer.name, "nmt_nfkc");
        assert!(model.normalizer.add_dummy_prefix);
        let tokenizer = model.tokenizer().unwrap();
        let eos = model.pieces.iter().position(|p| p.piece == "</s>").unwrap() as u32;
        let cases = expected();
        assert!(cases.len() >= 10);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let encoding = tokenizer.encode_char_offsets(text, false).unwrap();
            let mut got = encoding.get_ids().to_vec();
            got.push(eos);
            assert_eq!(got, ids(&case["t5_ids"]), "ids of {text:?}");
            let pieces: Vec<&str> = case["t5_pieces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            let ours: Vec<&str> = encoding
                .get_ids()
                .iter()
                .map(|&id| model.pieces[id as usize].piece.as_str())
                .collect();
            assert_eq!(ours, pieces[..pieces.len() - 1], "pieces of {text:?}");
            // Each token's offsets cover the text it came from (the dummy prefix is part of
            // the first word's token).
            let chars: Vec<char> = text.chars().collect();
            for (&(start, end), &id) in encoding.get_offsets().iter().zip(encoding.get_ids()) {
                assert!(
                    start <= end && end <= chars.len(),
                    "{text:?}: {start}..{end}"
                );
                let piece = model.pieces[id as usize].piece.trim_start_matches('▁');
                let span: String = chars[start..end].iter().collect();
                if id != model.unk_id().unwrap() as u32 && piece.is_ascii() && span.is_ascii() {
                    assert_eq!(span.trim_start(), piece, "offsets of {text:?}");
                }
            }
        }
    }

    #[test]
    fn a_t5_folder_without_tokenizer_json_is_tokenized_as_the_slow_t5_tokenizer() {
        let src = fixtures().join("conformance/models/t5-t2t");
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "config.json",
            "spiece.model",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
        }
        let config = crate::models::ModelConfig::from_dir(dir.path()).unwrap();
        let tokenizer = super::super::TextTokenizer::from_dir(dir.path(), &config).unwrap();
        let texts: Vec<serde_json::Value> = expected();
        for case in &texts {
            let text = case["text"].as_str().unwrap();
            let encoding = tokenizer
                .encode_batch(vec![super::super::EncodeInput::Single(text.into())], false)
                .unwrap()
                .remove(0);
            assert_eq!(encoding.get_ids(), ids(&case["t5_ids"]), "ids of {text:?}");
        }
        // The added tokens of tokenizer_config.json are single tokens.
        let encoding = tokenizer
            .encode_batch(
                vec![super::super::EncodeInput::Single("a <extra_id_7> b".into())],
                false,
            )
            .unwrap()
            .remove(0);
        assert!(
            encoding.get_ids().contains(&2000),
            "{:?}",
            encoding.get_ids()
        );
    }

    #[test]
    fn marian_tokenizer_gives_the_slow_marian_ids_and_decodes_them_back() {
        let tokenizer =
            MarianTokenizer::from_dir(&fixtures().join("conformance/models/marian-mt")).unwrap();
        for case in expected() {
            let text = case["text"].as_str().unwrap();
            let (got, offsets) = tokenizer.encode(text).unwrap();
            let want = ids(&case["marian_ids"]);
            assert_eq!(got, want, "ids of {text:?}");
            assert_eq!(offsets.len(), got.len());
            assert_eq!(
                tokenizer.decode(&want),
                case["marian_decoded"].as_str().unwrap(),
                "decode of {text:?}"
            );
        }
        assert_eq!(tokenizer.eos_id(), 0);
        assert_eq!(tokenizer.pad_id(), 2000);
    }

    #[test]
    fn a_file_that_is_not_a_model_is_a_build_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.model");
        std::fs::write(&path, b"\x0a\xff\xff").unwrap();
        let err = SpModel::from_file(&path).unwrap_err();
        assert!(matches!(err, TokenizerError::Build { .. }), "{err:?}");
    }
}
