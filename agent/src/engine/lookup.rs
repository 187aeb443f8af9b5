//! References as dockerd resolves them (moby `daemon/cluster/helpers.go`): the full ID, then
//! the exact name, then a unique ID prefix; none is "<kind> X not found" (404), several are
//! "<kind> X is ambiguous (N matches found)" (400).

use super::errors::ApiError;

/// The item `reference` names among `items`.
pub fn find<'a, T>(
    items: &'a [T],
    reference: &str,
    kind: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T, ApiError> {
    if let Some(item) = items.iter().find(|i| id(i) == reference) {
        return Ok(item);
    }
    let named: Vec<&T> = items.iter().filter(|i| name(i) == reference).collect();
    let candidates = if named.is_empty() {
        items
            .iter()
            .filter(|i| !reference.is_empty() && id(i).starts_with(reference))
            .collect()
    } else {
        named
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(ApiError::not_found(format!("{kind} {reference} not found"))),
        many => Err(ApiError::bad_request(format!(
            "{kind} {reference} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_then_name_then_prefix() {
        let items = [("abc123", "web"), ("abd456", "db"), ("web", "other")];
        let by = |r: &str| find(&items, r, "service", |i| i.0, |i| i.1).map(|i| i.0);
        assert_eq!(by("web"), Ok("web"), "a full ID wins over a name");
        assert_eq!(by("db"), Ok("abd456"));
        assert_eq!(by("abc"), Ok("abc123"));
        assert_eq!(
            by("ab").unwrap_err().message,
            "service ab is ambiguous (2 matches found)"
        );
        let missing = by("nope").unwrap_err();
        assert_eq!(
            (missing.status.as_u16(), missing.message.as_str()),
            (404, "service nope not found")
        );
    }
}
