//! Version negotiation as dockerd does it: the optional `/v1.N` path prefix (checked against
//! the versions served, then stripped before routing), the headers every answer carries
//! (`Api-Version`, `Ostype`, `Docker-Experimental`, `Server`), `GET`/`HEAD /_ping` (plus the
//! node's `Swarm` state) and `/version`.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Uri, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{Shared, errors::ApiError, node_state};
use crate::build_info;

/// The newest API version served: Docker Engine 27's, whose Swarm shapes these are. Clients
/// that negotiate (the docker CLI, docker-py with `version="auto"`) settle on it.
pub const API_VERSION: ApiVersion = (1, 47);
/// The oldest, as dockerd 27's.
pub const MIN_API_VERSION: ApiVersion = (1, 24);

/// An API version, `(1, 47)` for 1.47.
type ApiVersion = (u32, u32);

fn text((major, minor): ApiVersion) -> String {
    format!("{major}.{minor}")
}

/// Splits `/v1.45/services` into the version and `/services`; a path without a prefix has no
/// version. A version outside the served range is dockerd's 400.
fn split_version(path: &str) -> Result<(Option<ApiVersion>, &str), ApiError> {
    let Some(after_v) = path.strip_prefix("/v") else {
        return Ok((None, path));
    };
    let (version, rest) = after_v.split_at(after_v.find('/').unwrap_or(after_v.len()));
    let parsed = version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let Some(asked) = parsed else {
        // Not a version (`/volumes`...): an ordinary path.
        return Ok((None, path));
    };
    if asked > API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {}",
            text(API_VERSION)
        )));
    }
    if asked < MIN_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {}, please \
             upgrade your client to a newer version",
            text(MIN_API_VERSION)
        )));
    }
    Ok((Some(asked), if rest.is_empty() { "/" } else { rest }))
}

/// Middleware around the router: strips the version prefix (refusing versions not served)
/// and adds dockerd's headers to every answer.
pub async fn negotiate(mut request: Request, next: Next) -> Response {
    let rewritten = match split_version(request.uri().path()) {
        Err(e) => return with_headers(e.into_response()),
        Ok((None, _)) => None,
        Ok((Some(_), rest)) => {
            let path_and_query = match request.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            };
            Some(path_and_query)
        }
    };
    if let Some(path_and_query) = rewritten {
        let mut parts = request.uri().clone().into_parts();
        match path_and_query.parse() {
            Ok(pq) => parts.path_and_query = Some(pq),
            Err(_) => return with_headers(ApiError::bad_request("invalid path").into_response()),
        }
        match Uri::from_parts(parts) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return with_headers(ApiError::bad_request("invalid path").into_response()),
        }
    }
    with_headers(next.run(request).await)
}

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let server = format!("shoal/{} (linux)", env!("CARGO_PKG_VERSION"));
    for (name, value) in [
        ("api-version", text(API_VERSION)),
        ("docker-experimental", "false".to_string()),
        ("ostype", "linux".to_string()),
        ("server", server),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// `GET`/`HEAD /_ping`: `OK`, the node's `Swarm` state and no caching. The agent's own API
/// not answering is no reason to fail a ping: the header is then left out.
pub async fn ping(State(engine): State<Shared>) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(info) = node_state::read(&engine).await {
        headers.insert(
            "swarm",
            HeaderValue::from_static(node_state::ping_header(&info)),
        );
    }
    (headers, "OK")
}

/// `GET /version`.
pub async fn version() -> impl IntoResponse {
    let version = build_info::VERSION;
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let details = serde_json::json!({
        "ApiVersion": text(API_VERSION),
        "MinAPIVersion": text(MIN_API_VERSION),
        "GitCommit": build_info::GIT_COMMIT,
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel,
        "Experimental": "false",
        "BuildTime": "",
    });
    axum::Json(serde_json::json!({
        "Platform": { "Name": format!("shoal {version}") },
        "Components": [{ "Name": "Engine", "Version": version, "Details": details }],
        "Version": version,
        "ApiVersion": text(API_VERSION),
        "MinAPIVersion": text(MIN_API_VERSION),
        "GitCommit": build_info::GIT_COMMIT,
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

pub use crate::build_info::go_arch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_are_stripped_or_refused_as_dockerd() {
        assert_eq!(split_version("/_ping"), Ok((None, "/_ping")));
        assert_eq!(
            split_version("/v1.47/services/web"),
            Ok((Some((1, 47)), "/services/web"))
        );
        assert_eq!(split_version("/v1.41/info"), Ok((Some((1, 41)), "/info")));
        assert_eq!(split_version("/volumes"), Ok((None, "/volumes")));
        let too_new = split_version("/v1.51/info").unwrap_err();
        assert_eq!(
            too_new.message,
            "client version 1.51 is too new. Maximum supported API version is 1.47"
        );
        assert_eq!(too_new.status.as_u16(), 400);
        assert!(
            split_version("/v1.12/info")
                .unwrap_err()
                .message
                .contains("too old")
        );
    }
}
