//! Errors of loading, validating and activating policies. Each names the policy file or
//! upload, the field, and what to do.

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: cannot read the policy: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// A canary that cannot start, stop or be promoted.
    #[error("canary: {0}")]
    Canary(String),
    #[error("{origin}: not a valid policy file: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: field `{field}`: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
    #[error(
        "{origin}: stage {stage}: cannot read component {component:?} (paths are relative to the policy file): {source}"
    )]
    ComponentRead {
        origin: String,
        stage: usize,
        component: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{origin}: stage {stage}: component {component} does not compile or does not implement switchyard:policy@0.1.0: {message}"
    )]
    Compile {
        origin: String,
        stage: usize,
        component: String,
        message: String,
    },
    #[error("{origin}: stage {stage}: configure rejected the params: {message}")]
    Configure {
        origin: String,
        stage: usize,
        message: String,
    },
    #[error("{origin}: smoke test failed: {message} (the policy stays inactive)")]
    Smoke { origin: String, message: String },
    #[error("no policy named or identified {0:?} is loaded")]
    Unknown(String),
    #[error("nothing to roll back to: no earlier policy was active")]
    NoPrevious,
    #[error(
        "{limit} components are uploaded already: delete unreferenced ones first (GET /admin/components lists them, DELETE /admin/components/sha256:<hex> removes one)"
    )]
    TooManyUploads { limit: usize },
    #[error(
        "the uploaded components would take {would} bytes, over the {limit}-byte limit: delete unreferenced ones first (GET /admin/components lists them, DELETE /admin/components/sha256:<hex> removes one)"
    )]
    UploadsTooLarge { would: usize, limit: usize },
    #[error("component {component} is used by loaded policies {policies:?}; it stays")]
    ComponentInUse { component: String, policies: Vec<String> },
    #[error("no component {0} was uploaded")]
    UnknownComponent(String),
}
