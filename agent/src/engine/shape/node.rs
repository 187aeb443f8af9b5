//! A node in Docker's shape: `shoal node inspect`'s JSON (`render::docker_shape`) with the
//! fields Docker always has (`Version`, `UpdatedAt`). The nodes' platforms and engine versions
//! are not in the API's node records, so they are left out rather than guessed.

use shoal_control::api::NodeInfo;

use crate::{commands::node::render::docker_shape, time_format::rfc3339};

pub fn node(info: &NodeInfo) -> serde_json::Value {
    let mut shaped = docker_shape(info);
    shaped["Version"] = serde_json::json!({ "Index": 0 });
    shaped["UpdatedAt"] = rfc3339(info.created_at).into();
    shaped
}
