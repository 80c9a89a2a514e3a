//! Reading a Prometheus exposition (the agent's `/metrics`): unlabelled metrics and the series
//! of labelled ones.

/// The value of an unlabelled metric in a Prometheus exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The values of a labelled metric's series whose labels contain `label` (`reason="x"`; an
/// empty `label` takes them all).
pub fn metric_series(text: &str, name: &str, label: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| {
            let (labels, value) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
            labels.contains(label).then(|| value.trim().parse().ok())?
        })
        .collect()
}

/// The value of the one series of a labelled metric whose labels contain `label`.
pub fn metric_with(text: &str, name: &str, label: &str) -> Option<f64> {
    match metric_series(text, name, label).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}
