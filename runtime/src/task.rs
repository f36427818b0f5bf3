//! The pipeline task: its names and aliases (`HF_TASK`, contract §2) and its inference from
//! `config.json` `architectures[0]` (contract §3). A leaf module: configuration, loading,
//! pipelines and the hook chain all name tasks, and it depends on none of them.

use std::fmt;

/// A pipeline task (contract §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Task {
    /// `text-classification` (alias `sentiment-analysis`).
    TextClassification,
    /// `token-classification` (alias `ner`).
    TokenClassification,
    /// `feature-extraction`.
    FeatureExtraction,
    /// `fill-mask`.
    FillMask,
    /// `question-answering`.
    QuestionAnswering,
    /// `zero-shot-classification`.
    ZeroShotClassification,
    /// `table-question-answering`.
    TableQuestionAnswering,
    /// `text-generation`.
    TextGeneration,
    /// `text2text-generation`.
    Text2TextGeneration,
    /// `summarization`.
    Summarization,
    /// `translation`, or `translation_xx_to_yy` with the two languages.
    Translation {
        /// Source language, e.g. `en`.
        src: Option<String>,
        /// Target language, e.g. `de`.
        tgt: Option<String>,
    },
}

impl Task {
    /// Task names accepted by `HF_TASK`, for error messages.
    pub const ACCEPTED: &'static [&'static str] = &[
        "text-classification",
        "sentiment-analysis",
        "token-classification",
        "ner",
        "feature-extraction",
        "fill-mask",
        "question-answering",
        "zero-shot-classification",
        "table-question-answering",
        "text-generation",
        "text2text-generation",
        "summarization",
        "translation",
        "translation_xx_to_yy",
    ];

    /// Parses a task name or alias (contract §2).
    pub fn parse(name: &str) -> Option<Self> {
        let task = match name.trim() {
            "text-classification" | "sentiment-analysis" => Self::TextClassification,
            "token-classification" | "ner" => Self::TokenClassification,
            "feature-extraction" => Self::FeatureExtraction,
            "fill-mask" => Self::FillMask,
            "question-answering" => Self::QuestionAnswering,
            "zero-shot-classification" => Self::ZeroShotClassification,
            "table-question-answering" => Self::TableQuestionAnswering,
            "text-generation" => Self::TextGeneration,
            "text2text-generation" => Self::Text2TextGeneration,
            "summarization" => Self::Summarization,
            "translation" => Self::Translation {
                src: None,
                tgt: None,
            },
            other => {
                let rest = other.strip_prefix("translation_")?;
                let (src, tgt) = rest.split_once("_to_")?;
                let valid = |s: &str| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                };
                if !valid(src) || !valid(tgt) {
                    return None;
                }
                Self::Translation {
                    src: Some(src.to_owned()),
                    tgt: Some(tgt.to_owned()),
                }
            }
        };
        Some(task)
    }

    /// Infers the task from `config.json` `architectures[0]` by suffix (contract §3).
    pub fn from_architecture(arch: &str) -> Option<Self> {
        // TAPAS first: its QA head is table question answering, not extractive QA.
        if arch == "TapasForQuestionAnswering" {
            return Some(Self::TableQuestionAnswering);
        }
        let table: [(&str, Self); 8] = [
            ("ForQuestionAnswering", Self::QuestionAnswering),
            ("ForTokenClassification", Self::TokenClassification),
            ("ForSequenceClassification", Self::TextClassification),
            ("ForMaskedLM", Self::FillMask),
            ("ForCausalLM", Self::TextGeneration),
            ("LMHeadModel", Self::TextGeneration),
            ("ForConditionalGeneration", Self::Text2TextGeneration),
            ("MTModel", Self::Text2TextGeneration),
        ];
        table
            .into_iter()
            .find(|(suffix, _)| arch.ends_with(suffix))
            .map(|(_, task)| task)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::TextClassification => "text-classification",
            Self::TokenClassification => "token-classification",
            Self::FeatureExtraction => "feature-extraction",
            Self::FillMask => "fill-mask",
            Self::QuestionAnswering => "question-answering",
            Self::ZeroShotClassification => "zero-shot-classification",
            Self::TableQuestionAnswering => "table-question-answering",
            Self::TextGeneration => "text-generation",
            Self::Text2TextGeneration => "text2text-generation",
            Self::Summarization => "summarization",
            Self::Translation {
                src: Some(s),
                tgt: Some(t),
            } => return write!(f, "translation_{s}_to_{t}"),
            Self::Translation { .. } => "translation",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_translation_names() {
        assert_eq!(
            Task::parse("sentiment-analysis"),
            Some(Task::TextClassification)
        );
        assert_eq!(Task::parse("ner"), Some(Task::TokenClassification));
        assert_eq!(
            Task::parse("translation_en_to_de"),
            Some(Task::Translation {
                src: Some("en".into()),
                tgt: Some("de".into())
            })
        );
        assert_eq!(Task::parse("translation_en_de"), None);
        assert_eq!(Task::parse("sentiment"), None);
    }

    #[test]
    fn architecture_suffixes() {
        assert_eq!(
            Task::from_architecture("TapasForQuestionAnswering"),
            Some(Task::TableQuestionAnswering)
        );
        assert_eq!(
            Task::from_architecture("BertForQuestionAnswering"),
            Some(Task::QuestionAnswering)
        );
        assert_eq!(
            Task::from_architecture("GPT2LMHeadModel"),
            Some(Task::TextGeneration)
        );
        assert_eq!(
            Task::from_architecture("MarianMTModel"),
            Some(Task::Text2TextGeneration)
        );
        assert_eq!(Task::from_architecture("BertModel"), None);
    }
}
