//! Media types (spec §5): which request bodies we decode and which answers we encode.
//! `negotiate()` decides 406 and 415 before any model work.

/// A response encoding chosen from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/jsonlines`.
    JsonLines,
    /// `text/csv`.
    Csv,
}

impl Encoding {
    /// Media types accepted in `Accept` and `SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`.
    pub const ACCEPTED: &'static [&'static str] =
        &["application/json", "application/jsonlines", "application/x-jsonlines", "text/csv"];

    /// The encoding of a media type (parameters ignored, any case).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Self::Json),
            "application/jsonlines" | "application/x-jsonlines" | "application/jsonl" => Some(Self::JsonLines),
            "text/csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The `Content-Type` written for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::JsonLines => "application/jsonlines",
            Self::Csv => "text/csv",
        }
    }
}
