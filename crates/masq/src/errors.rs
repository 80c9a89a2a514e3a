//! The two kinds of failure the exit code tells apart: the user's input is wrong (exit 1) or
//! something failed at run time (exit 2, any other error).

use std::fmt;
use std::path::PathBuf;

use masq_config::{ConfigError, DirError};

/// Invalid arguments or destinations: one line per problem, each naming the flag and value.
#[derive(Debug)]
pub struct InvalidInput {
    problems: Vec<String>,
}

impl InvalidInput {
    /// Wraps one or more problems (one line each).
    pub fn new(problems: Vec<String>) -> Self {
        debug_assert!(!problems.is_empty());
        InvalidInput { problems }
    }

    /// A single problem.
    pub fn one(problem: impl Into<String>) -> Self {
        InvalidInput::new(vec![problem.into()])
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for InvalidInput {}

/// An invalid config file: every problem, each on its own line prefixed by the path.
#[derive(Debug)]
pub struct InvalidConfig {
    /// The file, as named on the command line.
    pub path: PathBuf,
    /// What is wrong with it.
    pub error: ConfigError,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.error.problems().iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidConfig {}

/// Exit 1 when anything in the error's chain is the user's input, 2 otherwise.
pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    let invalid_input = error.chain().any(|e| {
        e.is::<InvalidInput>()
            || e.is::<InvalidConfig>()
            || e.is::<ConfigError>()
            || e.is::<DirError>()
            || e.is::<masq_agent::InvalidFlags>()
    });
    if invalid_input {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn input_errors_exit_1_anywhere_in_the_chain_others_2() {
        let input = anyhow::Error::new(InvalidInput::one("--snat-ip: \"x\" is not an IP address"));
        assert_eq!(exit_code_for(&input), 1);
        assert_eq!(exit_code_for(&input.context("starting the agent")), 1);
        let config = masq_config::parse(b"*", &Default::default()).unwrap_err();
        let wrapped = Err::<(), _>(config)
            .context("loading the config")
            .unwrap_err();
        assert_eq!(exit_code_for(&wrapped), 1);
        let runtime = anyhow::anyhow!("nft failed: permission denied");
        assert_eq!(exit_code_for(&runtime), 2);
    }

    #[test]
    fn invalid_config_prefixes_every_line_with_the_path() {
        let error =
            masq_config::parse(b"nonMasqueradeCIDRs: [a, b]", &Default::default()).unwrap_err();
        let text = InvalidConfig {
            path: PathBuf::from("/etc/config/ip-masq-agent"),
            error,
        }
        .to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines
            .iter()
            .all(|l| l.starts_with("/etc/config/ip-masq-agent: nonMasqueradeCIDRs[")));
    }
}
