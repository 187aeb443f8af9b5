//! Secrets and configs as the stack commands use them: by name, and by the stack's label.

use std::collections::BTreeMap;

use shoal_control::api::KeyValue;
pub use shoal_control::cluster::objects::ObjectKind;
use tonic::transport::Channel;

use super::namespace_of;
use crate::commands::objects::{self, list};

/// Every secret (or config) of the swarm: name -> labels.
pub(super) async fn existing(
    channel: Channel,
    kind: ObjectKind,
) -> anyhow::Result<BTreeMap<String, Vec<KeyValue>>> {
    Ok(list(channel, kind)
        .await?
        .into_iter()
        .map(|o| (o.name, o.labels))
        .collect())
}

/// The names of the secrets (or configs) of stack `namespace`.
pub(super) async fn of_stack(
    channel: Channel,
    kind: ObjectKind,
    namespace: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(list(channel, kind)
        .await?
        .into_iter()
        .filter(|o| namespace_of(&o.labels) == Some(namespace))
        .map(|o| o.name)
        .collect())
}

pub(super) async fn create(
    channel: Channel,
    kind: ObjectKind,
    name: &str,
    data: &[u8],
    labels: &[KeyValue],
) -> anyhow::Result<()> {
    objects::create(channel, kind, name.into(), labels.to_vec(), data.to_vec()).await?;
    Ok(())
}

pub(super) use objects::remove;
