//! `GET /distribution/{name}/json`: shoal has no registry. The docker CLI asks it before
//! `service create` to pin the image's digest; on an error it warns ("image ... could not be
//! accessed on a registry to record its digest") and goes on with the reference as given,
//! which is what a program path needs.

use axum::extract::Path;

use super::errors::ApiError;

pub async fn inspect(Path(rest): Path<String>) -> ApiError {
    let name = rest.strip_suffix("/json").unwrap_or(&rest);
    ApiError::not_found(format!(
        "no registry: shoal runs programs, and {name} is taken as the path or name of one"
    ))
}
