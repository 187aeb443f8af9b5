//! `/configs`: the same endpoints as `/secrets`, for configs (`secrets::routes_of`), whose
//! inspect shows their `Data`.

use axum::Router;
use shoal_control::cluster::objects::ObjectKind;

use super::{Shared, secrets};

pub fn routes() -> Router<Shared> {
    secrets::routes_of(ObjectKind::Config)
}
