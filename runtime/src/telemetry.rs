//! Logging: a tracing subscriber writing text or JSON lines to stderr, how an error and its
//! causes are written in one line, and the log level the SageMaker SDK passes as
//! `SAGEMAKER_CONTAINER_LOG_LEVEL` (contract §2).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` uses `EnvFilter` syntax.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is already set (tests); keep that one.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// `err` and its sources, joined with ": ".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A log level given the way SageMaker's Python SDK gives it: a Python `logging` level number
/// (`container_log_level=logging.INFO` arrives as `20`) or its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerLogLevel {
    /// Python `DEBUG` (10) and below.
    Debug,
    /// Python `INFO` (20).
    Info,
    /// Python `WARNING` (30).
    Warning,
    /// Python `ERROR` (40) and `CRITICAL` (50).
    Error,
}

impl ContainerLogLevel {
    /// Parses `SAGEMAKER_CONTAINER_LOG_LEVEL`; the error is the rule the value broke (the config
    /// parser adds the variable's name).
    pub fn parse(value: &str) -> Result<Self, String> {
        let level = value.trim().to_ascii_lowercase();
        match level.as_str() {
            "debug" | "notset" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warning" | "warn" => Ok(Self::Warning),
            "error" | "critical" | "fatal" => Ok(Self::Error),
            _ => match level.parse::<i64>() {
                Ok(i64::MIN..20) => Ok(Self::Debug),
                Ok(20..30) => Ok(Self::Info),
                Ok(30..40) => Ok(Self::Warning),
                Ok(_) => Ok(Self::Error),
                Err(_) => Err(
                    "must be a Python logging level (10, 20, 30, 40, 50) or debug, info, warning, error, critical"
                        .to_owned(),
                ),
            },
        }
    }

    /// The tracing filter for this level. Debug is sagebrush's own debug output: the
    /// libraries' debug logs (HTTP, the wasm compiler) would drown it.
    pub fn filter(self) -> &'static str {
        match self {
            Self::Debug => "info,sagebrush=debug",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_log_level_takes_python_numbers_and_names() {
        let parse = ContainerLogLevel::parse;
        assert_eq!(parse("20"), Ok(ContainerLogLevel::Info));
        assert_eq!(parse("10"), Ok(ContainerLogLevel::Debug));
        assert_eq!(parse("30"), Ok(ContainerLogLevel::Warning));
        assert_eq!(parse("50"), Ok(ContainerLogLevel::Error));
        assert_eq!(parse("WARNING"), Ok(ContainerLogLevel::Warning));
        assert_eq!(parse("debug"), Ok(ContainerLogLevel::Debug));
        assert!(parse("loud").is_err());
    }
}
