//! The three wire formats by name, with their defaults, for every face that lets a person
//! choose one (the CLI's flags and config file, the desktop app's settings).

use crate::{AiError, Anthropic, OpenAi, Provider, ANTHROPIC_BASE_URL, OPENAI_BASE_URL};

/// Which API a provider speaks. Serialized lowercase (`openai`, `anthropic`, `compatible`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions; needs a key.
    Openai,
    /// Anthropic Messages; needs a key.
    Anthropic,
    /// Any OpenAI-compatible server (Ollama, llama.cpp, LM Studio, vLLM); a key is optional.
    Compatible,
}

impl ProviderKind {
    /// Every kind, in the order a menu lists them.
    pub const ALL: [ProviderKind; 3] = [Self::Openai, Self::Anthropic, Self::Compatible];

    /// `openai`, `anthropic` or `compatible`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Compatible => "compatible",
        }
    }

    /// The API's base URL when none is configured (Ollama's for `compatible`).
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Openai => OPENAI_BASE_URL,
            Self::Anthropic => ANTHROPIC_BASE_URL,
            Self::Compatible => "http://localhost:11434",
        }
    }

    /// The model used when none is configured.
    pub fn default_model(self) -> &'static str {
        match self {
            Self::Openai => "gpt-4o-mini",
            Self::Anthropic => "claude-3-5-haiku-latest",
            Self::Compatible => "llama3.2",
        }
    }

    /// The environment variable people keep this provider's key in (`compatible` sends
    /// OpenAI's when set).
    pub fn key_variable(self) -> &'static str {
        match self {
            Self::Anthropic => "ANTHROPIC_API_KEY",
            Self::Openai | Self::Compatible => "OPENAI_API_KEY",
        }
    }

    /// Whether requests cannot be made without a key.
    pub fn needs_key(self) -> bool {
        self != Self::Compatible
    }

    /// A provider of this kind at `base_url` (the default when `None` or empty) with `key`.
    ///
    /// Errors: [`AiError::Config`] when a kind that needs a key has none (saying where to put
    /// it: `where_keys_live`), or the base URL is not a URL.
    pub fn build(
        self,
        base_url: Option<&str>,
        key: Option<String>,
        where_keys_live: &str,
    ) -> Result<Box<dyn Provider>, AiError> {
        let base = base_url
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .unwrap_or(self.default_base_url())
            .to_owned();
        let key = key.filter(|k| !k.trim().is_empty());
        let required = || {
            key.clone().ok_or_else(|| {
                AiError::Config(format!(
                    "no API key for {}: {where_keys_live}",
                    self.as_str()
                ))
            })
        };
        Ok(match self {
            Self::Openai => Box::new(OpenAi::new(base, required()?)?),
            Self::Anthropic => Box::new(Anthropic::new(base, required()?)?),
            Self::Compatible => Box::new(OpenAi::compatible(base, key)?),
        })
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = AiError;

    /// Errors: [`AiError::Config`] naming the three kinds.
    fn from_str(s: &str) -> Result<Self, AiError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                AiError::Config(format!(
                    "unknown provider {s:?}: expected openai, anthropic or compatible"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_name_themselves() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>().ok(), Some(kind));
        }
        assert!(
            matches!("gpt".parse::<ProviderKind>(), Err(AiError::Config(m)) if m.contains("openai, anthropic or compatible"))
        );
    }

    #[test]
    fn keys_are_required_where_the_api_needs_one() {
        let err = ProviderKind::Anthropic.build(None, Some("  ".into()), "set ANTHROPIC_API_KEY");
        assert!(
            matches!(err, Err(AiError::Config(m)) if m == "no API key for anthropic: set ANTHROPIC_API_KEY")
        );
        assert!(ProviderKind::Compatible
            .build(Some("http://127.0.0.1:9"), None, "")
            .is_ok());
        assert!(ProviderKind::Openai
            .build(None, Some("sk-x".into()), "")
            .is_ok());
    }
}
