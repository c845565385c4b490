//! Resolving a model reference to local files.
//!
//! A model reference (a config value or CLI flag) is one of:
//!
//! - **a filesystem path**, used as it is: `models/SmolLM2-135M-Instruct.Q4_1.gguf`,
//!   `/srv/models/all-MiniLM-L6-v2`. A missing path is an error that names it and points to
//!   `scripts/fetch-models.sh`. (A path that really starts with `hf:` can be written `./hf:…`.)
//! - **a Hugging Face Hub reference**, `hf:OWNER/REPO[@REVISION][/PATH/IN/REPO]`: a file
//!   (`hf:owner/repo/model.Q8_0.gguf`) or, for an embedder directory, the repository itself
//!   (`hf:owner/repo`) or a folder in it (`hf:owner/repo/onnx`). The revision (branch, tag or
//!   commit; `main` by default) may follow the repository (`hf:owner/repo@v1.0/model.gguf`) or
//!   end the reference (`hf:owner/repo/model.gguf@v1.0`).
//!
//! Hub files are fetched with the `hf-hub` crate into the standard Hugging Face cache, shared
//! with Python tools: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
//! A file already in the cache is used without any network access. `HF_ENDPOINT` selects a
//! mirror, `HF_TOKEN` (or the cache's `token` file) authenticates, and `HF_HUB_OFFLINE=1`
//! forbids downloads: a file not in the cache is then an error. A download shows a progress
//! bar when standard error is a terminal.
//!
//! ```
//! use slmgate_local_model::hub::{parse_model_ref, ModelRef};
//! let r = parse_model_ref("hf:owner/repo@v2/weights/model.gguf").unwrap();
//! let ModelRef::Hub(hub) = r else { panic!() };
//! assert_eq!(hub.repo, "owner/repo");
//! assert_eq!(hub.revision.as_deref(), Some("v2"));
//! assert_eq!(hub.path.as_deref(), Some("weights/model.gguf"));
//! ```

use std::ffi::OsString;
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};

/// The prefix of a Hugging Face Hub reference.
pub const HUB_PREFIX: &str = "hf:";

/// What to tell a user whose model files are missing.
const FETCH_HINT: &str = "run scripts/fetch-models.sh to download the default models, \
                          or give the path of an existing model";

/// Errors resolving a model reference.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The reference is malformed.
    #[error("invalid model reference {spec:?}: {reason}")]
    InvalidSpec {
        /// The reference as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local path does not exist.
    #[error("model path {path} does not exist; {FETCH_HINT}", path = .path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// A model file was expected but the path is a directory.
    #[error("model path {path} is a directory, but a model file is expected here", path = .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A model directory was expected but the path is a file.
    #[error("model path {path} is a file, but a model directory is expected here", path = .path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A local model directory lacks files.
    #[error("model directory {dir} is missing {files}; {FETCH_HINT}", dir = .dir.display(), files = .missing.join(", "))]
    MissingFiles {
        /// The directory.
        dir: PathBuf,
        /// The missing files, relative to `dir`.
        missing: Vec<String>,
    },
    /// `HF_HUB_OFFLINE` is set and the file is not in the cache.
    #[error("{file} of {reference} is not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set", cache = .cache.display())]
    NotCached {
        /// The hub reference.
        reference: String,
        /// The file inside the repository.
        file: String,
        /// The cache directory searched.
        cache: PathBuf,
    },
    /// The hub client failed (network, HTTP status, I/O in the cache).
    #[error("fetching {file} of {reference}: {source} (without network access, download the files by other means and give their local path)")]
    Download {
        /// The hub reference.
        reference: String,
        /// The file inside the repository.
        file: String,
        /// hf-hub's error (boxed: it is large).
        #[source]
        source: Box<ApiError>,
    },
}

/// A parsed model reference: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A filesystem path, used as it is.
    Local(PathBuf),
    /// A Hugging Face Hub reference.
    Hub(HubRef),
}

/// A Hugging Face Hub reference: `hf:OWNER/REPO[@REVISION][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `owner/name`.
    pub repo: String,
    /// A branch, tag or commit; `None` means `main`.
    pub revision: Option<String>,
    /// A file or folder inside the repository; `None` means the repository's root.
    pub path: Option<String>,
}

impl HubRef {
    /// The revision to fetch: the one given, or `main`.
    pub fn revision_or_default(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// `path` joined under this reference's folder (`file` alone at the repository's root).
    fn file_in_repo(&self, file: &str) -> String {
        match &self.path {
            Some(dir) => format!("{dir}/{file}"),
            None => file.to_string(),
        }
    }

    fn hf_repo(&self) -> Repo {
        match &self.revision {
            Some(rev) => Repo::with_revision(self.repo.clone(), RepoType::Model, rev.clone()),
            None => Repo::model(self.repo.clone()),
        }
    }
}

impl fmt::Display for HubRef {
    /// The canonical form: `hf:owner/repo[@revision][/path]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HUB_PREFIX}{}", self.repo)?;
        if let Some(rev) = &self.revision {
            write!(f, "@{rev}")?;
        }
        if let Some(path) = &self.path {
            write!(f, "/{path}")?;
        }
        Ok(())
    }
}

/// Parses a model reference without touching the filesystem or the network.
///
/// Anything not starting with `hf:` is a local path. A hub reference needs an owner and a
/// repository name (letters, digits, `-`, `_`, `.`), at most one revision, and a path whose
/// components are neither empty, `.` nor `..`.
pub fn parse_model_ref(spec: &str) -> Result<ModelRef, HubError> {
    let Some(rest) = spec.strip_prefix(HUB_PREFIX) else {
        if spec.trim().is_empty() {
            return Err(invalid(spec, "empty model reference"));
        }
        return Ok(ModelRef::Local(PathBuf::from(spec)));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let mut parts = rest.split('/');
    let owner = parts.next().unwrap_or_default();
    let Some(name_rev) = parts.next() else {
        return Err(invalid(spec, "expected hf:OWNER/REPO[@REVISION][/PATH]"));
    };
    let (name, mut revision) = split_revision(spec, name_rev)?;
    for (what, s) in [("owner", owner), ("repository name", name)] {
        if s.is_empty() {
            return Err(invalid(spec, &format!("the {what} is empty")));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || s == "."
            || s == ".."
        {
            return Err(invalid(
                spec,
                &format!("the {what} {s:?} may only contain letters, digits, '-', '_' and '.'"),
            ));
        }
    }

    let mut path: Vec<&str> = parts.collect();
    if let Some(last) = path.last_mut() {
        if last.contains('@') {
            let (file, rev) = split_revision(spec, last)?;
            if revision.is_some() && rev.is_some() {
                return Err(invalid(spec, "more than one @revision"));
            }
            revision = revision.or(rev);
            *last = file;
        }
    }
    // A trailing slash (`hf:owner/repo/`) names the repository's root.
    if path.last() == Some(&"") {
        path.pop();
    }
    for component in &path {
        if component.is_empty() || *component == "." || *component == ".." {
            return Err(invalid(
                spec,
                "the path inside the repository has an empty, '.' or '..' component",
            ));
        }
    }
    Ok(ModelRef::Hub(HubRef {
        repo: format!("{owner}/{name}"),
        revision: revision.map(str::to_string),
        path: (!path.is_empty()).then(|| path.join("/")),
    }))
}

/// Splits `name@rev` into its parts; `rev` must not be empty.
fn split_revision<'a>(spec: &str, s: &'a str) -> Result<(&'a str, Option<&'a str>), HubError> {
    match s.split_once('@') {
        None => Ok((s, None)),
        Some((_, rev)) if rev.is_empty() || rev.contains('@') => {
            Err(invalid(spec, "the @revision is empty or repeated"))
        }
        Some((name, rev)) => Ok((name, Some(rev))),
    }
}

fn invalid(spec: &str, reason: &str) -> HubError {
    HubError::InvalidSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    }
}

/// Resolves a reference to a model file (a GGUF, say): a local file, or a hub file fetched
/// into the cache (see the [module documentation](self)).
///
/// A local path must exist and be a file. A hub reference must name a file inside the
/// repository (`hf:owner/repo/model.gguf`).
pub fn resolve_model_file(spec: &str) -> Result<PathBuf, HubError> {
    resolve_file_with(&HubEnv::from_env(), spec)
}

fn resolve_file_with(env: &HubEnv, spec: &str) -> Result<PathBuf, HubError> {
    match parse_model_ref(spec)? {
        ModelRef::Local(path) => {
            if path.is_file() {
                Ok(path)
            } else if path.is_dir() {
                Err(HubError::NotAFile { path })
            } else {
                Err(HubError::NotFound { path })
            }
        }
        ModelRef::Hub(hub) => {
            let Some(file) = hub.path.clone() else {
                return Err(invalid(
                    spec,
                    "name a file inside the repository, as in hf:OWNER/REPO/model.gguf",
                ));
            };
            fetch_with(env, &hub, &file)
        }
    }
}

/// Resolves a reference to a model directory holding `files` (for an embedder:
/// `config.json`, `tokenizer.json`, `model.safetensors`).
///
/// A local path must be a directory containing every one of `files`; the error lists those
/// missing. A hub reference names a repository (`hf:owner/repo`) or a folder in it
/// (`hf:owner/repo/sub`): each file is fetched into the cache, and the returned directory is
/// the cache's snapshot folder holding them all.
pub fn resolve_model_dir(spec: &str, files: &[&str]) -> Result<PathBuf, HubError> {
    resolve_dir_with(&HubEnv::from_env(), spec, files)
}

fn resolve_dir_with(env: &HubEnv, spec: &str, files: &[&str]) -> Result<PathBuf, HubError> {
    match parse_model_ref(spec)? {
        ModelRef::Local(dir) => {
            if dir.is_file() {
                return Err(HubError::NotADirectory { path: dir });
            }
            if !dir.is_dir() {
                return Err(HubError::NotFound { path: dir });
            }
            let missing: Vec<String> = files
                .iter()
                .filter(|f| !dir.join(f).is_file())
                .map(std::string::ToString::to_string)
                .collect();
            if missing.is_empty() {
                Ok(dir)
            } else {
                Err(HubError::MissingFiles { dir, missing })
            }
        }
        ModelRef::Hub(hub) => {
            if files.is_empty() {
                return Err(invalid(spec, "no files to fetch for a model directory"));
            }
            let mut dir = None;
            for file in files {
                let in_repo = hub.file_in_repo(file);
                let local = fetch_with(env, &hub, &in_repo)?;
                // `local` is `<snapshot>/<in_repo>`: strip `file`'s components to get the
                // folder. All files of one revision land in the same snapshot folder.
                let mut folder = local;
                for _ in Path::new(file).components() {
                    folder.pop();
                }
                dir.get_or_insert(folder);
            }
            dir.ok_or_else(|| invalid(spec, "no files to fetch for a model directory"))
        }
    }
}

/// The directory holding slmgate's model files, where `scripts/fetch-models.sh` puts them:
/// `$SLMGATE_MODELS_DIR`, or `./models` (relative to the working directory). Hub downloads go
/// to the Hugging Face cache instead.
pub fn default_models_dir() -> PathBuf {
    models_dir_from(std::env::var_os("SLMGATE_MODELS_DIR"))
}

fn models_dir_from(env: Option<OsString>) -> PathBuf {
    match env {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("models"),
    }
}

/// Where and how hub files are fetched: read from the environment once per resolution.
#[derive(Debug, Clone)]
struct HubEnv {
    /// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else hf-hub's default.
    cache: Cache,
    /// `HF_HUB_OFFLINE`: use the cache only.
    offline: bool,
    /// `HF_ENDPOINT`: a mirror to download from instead of the default hub.
    endpoint: Option<String>,
    /// `HF_TOKEN` (else hf-hub reads the cache's `token` file).
    token: Option<String>,
}

impl HubEnv {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let cache = match var("HF_HUB_CACHE") {
            Some(dir) => Cache::new(PathBuf::from(dir)),
            None => Cache::from_env(),
        };
        Self {
            cache,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            endpoint: var("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_string()),
            token: var("HF_TOKEN"),
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The cached copy of `file`, if any. Besides hf-hub's lookup through `refs/<revision>`, a
/// full commit hash is looked up directly in its snapshot folder (a commit has no ref file).
fn cached(cache: &Cache, hub: &HubRef, file: &str) -> Option<PathBuf> {
    let repo = hub.hf_repo();
    if let Some(path) = cache.repo(repo.clone()).get(file) {
        return Some(path);
    }
    let rev = hub.revision.as_deref()?;
    if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        let path = cache
            .path()
            .join(repo.folder_name())
            .join("snapshots")
            .join(rev)
            .join(file);
        return path.is_file().then_some(path);
    }
    None
}

/// One file of a hub repository: from the cache, or downloaded into it.
fn fetch_with(env: &HubEnv, hub: &HubRef, file: &str) -> Result<PathBuf, HubError> {
    if let Some(path) = cached(&env.cache, hub, file) {
        return Ok(path);
    }
    if env.offline {
        return Err(HubError::NotCached {
            reference: hub.to_string(),
            file: file.to_string(),
            cache: env.cache.path().clone(),
        });
    }
    let download_err = |source: ApiError| HubError::Download {
        reference: hub.to_string(),
        file: file.to_string(),
        source: Box::new(source),
    };
    let mut builder = ApiBuilder::from_cache(env.cache.clone()).with_progress(false);
    if let Some(endpoint) = &env.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let Some(token) = &env.token {
        builder = builder.with_token(Some(token.clone()));
    }
    let api = builder.build().map_err(download_err)?;
    tracing::info!(reference = %hub, file, "downloading model file");
    let progress = DownloadProgress::new(std::io::stderr().is_terminal());
    api.repo(hub.hf_repo())
        .download_with_progress(file, progress)
        .map_err(download_err)
}

/// A download progress bar on standard error, drawn only when it is a terminal.
struct DownloadProgress {
    bar: Option<ProgressBar>,
}

impl DownloadProgress {
    fn new(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let style = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::new(0).with_style(style)
        });
        Self { bar }
    }
}

impl Progress for DownloadProgress {
    fn init(&mut self, size: usize, filename: &str) {
        if let Some(bar) = &self.bar {
            bar.set_length(size as u64);
            bar.set_message(filename.to_string());
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(spec: &str) -> HubRef {
        match parse_model_ref(spec) {
            Ok(ModelRef::Hub(h)) => h,
            other => panic!("{spec}: {other:?}"),
        }
    }

    #[test]
    fn parses_hub_references() {
        let h = hub("hf:owner/repo");
        assert_eq!(
            h,
            HubRef {
                repo: "owner/repo".into(),
                revision: None,
                path: None
            }
        );
        assert_eq!(h.revision_or_default(), "main");

        let h = hub("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0.gguf");
        assert_eq!(h.repo, "Qwen/Qwen2.5-0.5B-Instruct-GGUF");
        assert_eq!(h.path.as_deref(), Some("qwen2.5-0.5b-instruct-q8_0.gguf"));

        let h = hub("hf:owner/repo/sub/dir/model.gguf@v1.2");
        assert_eq!(h.path.as_deref(), Some("sub/dir/model.gguf"));
        assert_eq!(h.revision.as_deref(), Some("v1.2"));

        let h = hub("hf:owner/repo@refs-pr-3/model.gguf");
        assert_eq!(h.revision.as_deref(), Some("refs-pr-3"));
        assert_eq!(h.path.as_deref(), Some("model.gguf"));

        let h = hub("hf:owner/repo@abc123");
        assert_eq!(h.revision.as_deref(), Some("abc123"));
        assert_eq!(h.path, None);

        // `hf://` and a trailing slash are tolerated.
        let h = hub("hf://owner/repo/");
        assert_eq!((h.repo.as_str(), h.path.as_deref()), ("owner/repo", None));
    }

    #[test]
    fn hub_references_round_trip() {
        for spec in [
            "hf:owner/repo",
            "hf:owner/repo@v1",
            "hf:owner/repo/a/b.gguf",
            "hf:owner/repo@dev/a/b.gguf",
        ] {
            assert_eq!(hub(spec).to_string(), spec);
        }
        assert_eq!(hub("hf:o/r/f.gguf@v1").to_string(), "hf:o/r@v1/f.gguf");
        assert_eq!(
            hub("hf:o/r/sub").file_in_repo("config.json"),
            "sub/config.json"
        );
        assert_eq!(hub("hf:o/r").file_in_repo("config.json"), "config.json");
    }

    #[test]
    fn rejects_malformed_hub_references() {
        for spec in [
            "hf:",
            "hf:owner",
            "hf:/repo",
            "hf:owner/",
            "hf:owner/repo@",
            "hf:owner/repo@a@b",
            "hf:owner/repo@v1/file@v2",
            "hf:owner/repo//file",
            "hf:owner/repo/../file",
            "hf:owner/repo/./file",
            "hf:own er/repo",
            "hf:owner/re:po",
            "hf:../repo",
        ] {
            let err = parse_model_ref(spec).unwrap_err();
            assert!(
                matches!(err, HubError::InvalidSpec { .. }),
                "{spec}: {err:?}"
            );
            assert!(err.to_string().contains(spec), "{err}");
        }
        assert!(parse_model_ref("").is_err());
        assert!(parse_model_ref("   ").is_err());
    }

    #[test]
    fn plain_paths_are_local() {
        for spec in [
            "models/x.gguf",
            "/abs/model.gguf",
            "./hf:odd/name",
            "HF:not-a-ref",
        ] {
            assert_eq!(
                parse_model_ref(spec).unwrap(),
                ModelRef::Local(PathBuf::from(spec))
            );
        }
    }

    #[test]
    fn local_files() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("m.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let spec = file.to_str().unwrap();
        assert_eq!(resolve_model_file(spec).unwrap(), file);

        let missing = tmp.path().join("nope.gguf");
        let err = resolve_model_file(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, HubError::NotFound { .. }));
        let msg = err.to_string();
        assert!(msg.contains("nope.gguf"), "{msg}");
        assert!(msg.contains("scripts/fetch-models.sh"), "{msg}");

        let err = resolve_model_file(tmp.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(err, HubError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn local_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("emb");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let spec = dir.to_str().unwrap();
        let files = ["config.json", "tokenizer.json", "model.safetensors"];

        let err = resolve_model_dir(spec, &files).unwrap_err();
        match &err {
            HubError::MissingFiles { missing, .. } => {
                assert_eq!(missing, &["tokenizer.json", "model.safetensors"]);
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("is missing tokenizer.json, model.safetensors"),
            "{msg}"
        );
        assert!(msg.contains("scripts/fetch-models.sh"), "{msg}");

        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), "").unwrap();
        assert_eq!(resolve_model_dir(spec, &files).unwrap(), dir);
        assert_eq!(resolve_model_dir(spec, &[]).unwrap(), dir);

        let err = resolve_model_dir(dir.join("config.json").to_str().unwrap(), &files).unwrap_err();
        assert!(matches!(err, HubError::NotADirectory { .. }), "{err:?}");
        let err = resolve_model_dir(tmp.path().join("nope").to_str().unwrap(), &files).unwrap_err();
        assert!(matches!(err, HubError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn hub_spec_without_a_file_is_an_error_for_files() {
        let err = resolve_model_file("hf:owner/repo").unwrap_err();
        assert!(matches!(err, HubError::InvalidSpec { .. }), "{err:?}");
        let err = resolve_model_dir("hf:owner/repo", &[]).unwrap_err();
        assert!(matches!(err, HubError::InvalidSpec { .. }), "{err:?}");
    }

    #[test]
    fn cached_files_resolve_without_network() {
        // Lay out a cache as hf-hub writes it and look files up in it directly (the
        // environment is left alone: tests run in parallel).
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().to_path_buf());
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snapshot = tmp
            .path()
            .join("models--owner--repo")
            .join("snapshots")
            .join(commit);
        std::fs::create_dir_all(snapshot.join("sub")).unwrap();
        std::fs::write(snapshot.join("sub/model.gguf"), b"GGUF").unwrap();
        std::fs::create_dir_all(tmp.path().join("models--owner--repo/refs")).unwrap();
        std::fs::write(tmp.path().join("models--owner--repo/refs/main"), commit).unwrap();

        let h = hub("hf:owner/repo/sub/model.gguf");
        assert_eq!(
            cached(&cache, &h, "sub/model.gguf"),
            Some(snapshot.join("sub/model.gguf"))
        );
        let h = hub(&format!("hf:owner/repo@{commit}/sub/model.gguf"));
        assert_eq!(
            cached(&cache, &h, "sub/model.gguf"),
            Some(snapshot.join("sub/model.gguf"))
        );
        let h = hub("hf:owner/repo@other/sub/model.gguf");
        assert_eq!(cached(&cache, &h, "sub/model.gguf"), None);
        let h = hub("hf:owner/repo/missing.gguf");
        assert_eq!(cached(&cache, &h, "missing.gguf"), None);
    }

    fn test_env(cache: &Path, offline: bool, endpoint: Option<String>) -> HubEnv {
        HubEnv {
            cache: Cache::new(cache.to_path_buf()),
            offline,
            endpoint,
            token: None,
        }
    }

    #[test]
    fn offline_misses_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let env = test_env(tmp.path(), true, None);
        let err = fetch_with(&env, &hub("hf:owner/repo/m.gguf"), "m.gguf").unwrap_err();
        assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("m.gguf of hf:owner/repo/m.gguf"), "{msg}");
        assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    }

    #[test]
    fn unreachable_endpoint_is_a_download_error() {
        // A closed loopback port: the real hf-hub request path runs and fails fast, with no
        // traffic leaving the machine.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let tmp = tempfile::tempdir().unwrap();
        let env = test_env(tmp.path(), false, Some(format!("http://127.0.0.1:{port}")));
        let err = fetch_with(&env, &hub("hf:owner/repo/m.gguf"), "m.gguf").unwrap_err();
        assert!(matches!(err, HubError::Download { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("fetching m.gguf of hf:owner/repo/m.gguf: "),
            "{err}"
        );

        // A cached file is found without touching the (unreachable) endpoint.
        let snapshot = tmp.path().join("models--owner--repo/snapshots/abc");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(snapshot.join("m.gguf"), b"GGUF").unwrap();
        std::fs::create_dir_all(tmp.path().join("models--owner--repo/refs")).unwrap();
        std::fs::write(tmp.path().join("models--owner--repo/refs/main"), "abc").unwrap();
        let path = fetch_with(&env, &hub("hf:owner/repo/m.gguf"), "m.gguf").unwrap();
        assert_eq!(path, snapshot.join("m.gguf"));
    }

    #[test]
    fn hub_dirs_resolve_to_the_snapshot_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--owner--emb");
        let snapshot = repo.join("snapshots/c0ffee");
        std::fs::create_dir_all(snapshot.join("onnx/1_Pooling")).unwrap();
        for f in [
            "config.json",
            "onnx/config.json",
            "onnx/1_Pooling/config.json",
        ] {
            std::fs::write(snapshot.join(f), "{}").unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "c0ffee").unwrap();
        let env = test_env(tmp.path(), true, None);

        let dir = resolve_dir_with(&env, "hf:owner/emb", &["config.json"]).unwrap();
        assert_eq!(dir, snapshot);
        let dir = resolve_dir_with(
            &env,
            "hf:owner/emb/onnx",
            &["config.json", "1_Pooling/config.json"],
        )
        .unwrap();
        assert_eq!(dir, snapshot.join("onnx"));
        let file = resolve_file_with(&env, "hf:owner/emb/onnx/config.json").unwrap();
        assert_eq!(file, snapshot.join("onnx/config.json"));

        let err = resolve_dir_with(&env, "hf:owner/emb", &["config.json", "model.safetensors"])
            .unwrap_err();
        assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
    }

    #[test]
    fn models_dir() {
        assert_eq!(models_dir_from(None), PathBuf::from("models"));
        assert_eq!(models_dir_from(Some("".into())), PathBuf::from("models"));
        assert_eq!(
            models_dir_from(Some("/srv/models".into())),
            PathBuf::from("/srv/models")
        );
    }

    #[test]
    fn offline_values() {
        for v in ["1", "true", "YES", " on "] {
            assert!(truthy(v), "{v}");
        }
        for v in ["0", "false", "", "no"] {
            assert!(!truthy(v), "{v}");
        }
    }

    #[test]
    fn progress_without_terminal_is_silent() {
        let mut p = DownloadProgress::new(false);
        p.init(10, "f");
        p.update(5);
        p.finish();
        assert!(p.bar.is_none());
    }
}
