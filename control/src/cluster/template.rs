//! `--hostname` placeholders, as swarmkit expands them on the task's node (its
//! `template.ExpandContainerSpec`): `{{.Service.Name}}-{{.Task.Slot}}`. Only field references
//! are supported, not the rest of Go's template language (pipelines, functions, conditions):
//! the leader refuses those when the spec is accepted, and the node fills in the fields.

/// What a task's placeholders stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateContext {
    pub service_id: String,
    pub service_name: String,
    pub node_id: String,
    pub node_hostname: String,
    pub task_id: String,
    /// `<service>.<slot>.<task-id>`.
    pub task_name: String,
    /// The slot, or the node ID for a global service's task (as swarmkit).
    pub task_slot: String,
}

/// The placeholders there are, as written between the braces.
pub const FIELDS: &[&str] = &[
    ".Service.ID",
    ".Service.Name",
    ".Node.ID",
    ".Node.Hostname",
    ".Node.Platform.OS",
    ".Node.Platform.Architecture",
    ".Task.ID",
    ".Task.Name",
    ".Task.Slot",
];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed action: {{{{ without }}}}")]
    Unclosed,
    #[error(
        "unsupported placeholder {{{{{0}}}}} (supported: {{{{.Service.ID}}}}, \
         {{{{.Service.Name}}}}, {{{{.Node.ID}}}}, {{{{.Node.Hostname}}}}, {{{{.Node.Platform.OS}}}}, \
         {{{{.Node.Platform.Architecture}}}}, {{{{.Task.ID}}}}, {{{{.Task.Name}}}}, {{{{.Task.Slot}}}})"
    )]
    Unsupported(String),
}

/// The text with every placeholder replaced by `value(field)`.
fn render(
    text: &str,
    mut value: impl FnMut(&'static str) -> String,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let action = &after[..close];
        let field = FIELDS
            .iter()
            .find(|f| **f == action.trim())
            .ok_or_else(|| TemplateError::Unsupported(action.to_owned()))?;
        out.push_str(&value(field));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `text` is a template the node can expand.
pub fn check(text: &str) -> Result<(), TemplateError> {
    render(text, |_| String::new()).map(drop)
}

/// Whether `text` has placeholders at all.
pub fn has_placeholders(text: &str) -> bool {
    text.contains("{{")
}

/// `text` with its placeholders filled in from `cx`.
pub fn expand(text: &str, cx: &TemplateContext) -> Result<String, TemplateError> {
    render(text, |field| match field {
        ".Service.ID" => cx.service_id.clone(),
        ".Service.Name" => cx.service_name.clone(),
        ".Node.ID" => cx.node_id.clone(),
        ".Node.Hostname" => cx.node_hostname.clone(),
        ".Node.Platform.OS" => std::env::consts::OS.to_owned(),
        ".Node.Platform.Architecture" => std::env::consts::ARCH.to_owned(),
        ".Task.ID" => cx.task_id.clone(),
        ".Task.Name" => cx.task_name.clone(),
        _ => cx.task_slot.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> TemplateContext {
        TemplateContext {
            service_id: "svc1".into(),
            service_name: "web_api".into(),
            node_id: "node1".into(),
            node_hostname: "host-a".into(),
            task_id: "t1".into(),
            task_name: "web_api.3.t1".into(),
            task_slot: "3".into(),
        }
    }

    #[test]
    fn fields_are_filled_in() {
        assert_eq!(
            expand("{{.Service.Name}}-{{ .Task.Slot }}", &cx()).unwrap(),
            "web_api-3"
        );
        assert_eq!(
            expand(
                "{{.Node.Hostname}}.{{.Task.ID}}.{{.Service.ID}}.{{.Node.ID}}",
                &cx()
            )
            .unwrap(),
            "host-a.t1.svc1.node1"
        );
        assert_eq!(expand("{{.Task.Name}}", &cx()).unwrap(), "web_api.3.t1");
        assert_eq!(expand("{{.Node.Platform.OS}}", &cx()).unwrap(), "linux");
        assert_eq!(expand("plain", &cx()).unwrap(), "plain");
        assert_eq!(expand("a}}b", &cx()).unwrap(), "a}}b");
        assert!(!has_placeholders("plain") && has_placeholders("x{{.Task.ID}}"));
    }

    #[test]
    fn the_rest_of_gos_language_is_refused() {
        assert_eq!(check("{{.Task.Slot"), Err(TemplateError::Unclosed));
        for bad in [
            "{{.Service.Labels}}",
            "{{printf \"%d\" 1}}",
            "{{}}",
            "{{.task.slot}}",
        ] {
            assert!(
                matches!(check(bad), Err(TemplateError::Unsupported(_))),
                "{bad}"
            );
        }
        assert_eq!(
            TemplateError::Unsupported(".X".into()).to_string(),
            "unsupported placeholder {{.X}} (supported: {{.Service.ID}}, {{.Service.Name}}, \
             {{.Node.ID}}, {{.Node.Hostname}}, {{.Node.Platform.OS}}, \
             {{.Node.Platform.Architecture}}, {{.Task.ID}}, {{.Task.Name}}, {{.Task.Slot}})"
        );
    }
}
