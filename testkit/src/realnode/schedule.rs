//! Whether a DaemonSet's pod lands on a node, decided as the DaemonSet
//! controller and the scheduler decide it (there is no kubelet or
//! scheduler here): the pod template's `nodeSelector`, its required node
//! affinity, and the node's `NoSchedule` and `NoExecute` taints against
//! its tolerations. Preferred affinity, resources and ports are not
//! looked at: they decide between nodes, not whether a node may run it.

use std::collections::BTreeMap;

use serde_json::Value;

/// A node's taint.
#[derive(Debug, Clone)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// What a node shows the scheduler: its labels and taints.
#[derive(Debug, Clone, Default)]
pub struct NodeIdentity {
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

impl NodeIdentity {
    /// An ordinary Linux node, untainted.
    pub fn linux(name: &str) -> NodeIdentity {
        let labels = [
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", std::env::consts::ARCH),
            ("kubernetes.io/hostname", name),
        ];
        NodeIdentity {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: Vec::new(),
        }
    }

    /// A virtual-kubelet node as it registers itself: the `type` and
    /// role labels, the provider's NoSchedule taint, and the os label of
    /// the pods it takes (Linux).
    pub fn virtual_kubelet(name: &str) -> NodeIdentity {
        let mut node = NodeIdentity::linux(name);
        node.labels.insert("type".into(), "virtual-kubelet".into());
        node.labels
            .insert("kubernetes.io/role".into(), "agent".into());
        node.taints.push(Taint {
            key: "virtual-kubelet.io/provider".into(),
            value: "mock".into(),
            effect: "NoSchedule".into(),
        });
        node
    }

    /// Whether the pod template of `manifest` (a DaemonSet, as YAML) is
    /// placed on this node.
    pub fn admits(&self, manifest: &str) -> bool {
        let doc: Value = serde_yaml_ng::from_str(manifest).expect("manifest parses");
        self.admits_spec(&doc["spec"]["template"]["spec"])
    }

    /// Whether a pod with `spec` is placed on this node.
    pub fn admits_spec(&self, spec: &Value) -> bool {
        let selector_holds = spec["nodeSelector"]
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| self.labels.get(k).map(String::as_str) == v.as_str());
        let required =
            &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        // Terms are ORed, the expressions of a term ANDed; no terms: any node.
        let affinity_holds = match required["nodeSelectorTerms"].as_array() {
            None => true,
            Some(terms) => terms.iter().any(|term| {
                term["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|e| self.matches(e))
            }),
        };
        let tolerated = self
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(|t| {
                spec["tolerations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|tol| tolerates(tol, t))
            });
        selector_holds && affinity_holds && tolerated
    }

    /// One nodeSelectorRequirement: `NotIn` and `DoesNotExist` hold where
    /// the label is absent.
    fn matches(&self, expr: &Value) -> bool {
        let label = expr["key"].as_str().and_then(|k| self.labels.get(k));
        let values: Vec<&str> = expr["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let number = |s: &str| s.parse::<i64>().ok();
        match expr["operator"].as_str() {
            Some("In") => label.is_some_and(|l| values.contains(&l.as_str())),
            Some("NotIn") => label.is_none_or(|l| !values.contains(&l.as_str())),
            Some("Exists") => label.is_some(),
            Some("DoesNotExist") => label.is_none(),
            Some(op @ ("Gt" | "Lt")) => {
                match (
                    label.and_then(|l| number(l)),
                    values.first().and_then(|v| number(v)),
                ) {
                    (Some(have), Some(want)) => {
                        (op == "Gt" && have > want) || (op == "Lt" && have < want)
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// Whether `toleration` tolerates `taint`.
fn tolerates(toleration: &Value, taint: &Taint) -> bool {
    if toleration["effect"]
        .as_str()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or_default();
    match toleration["operator"].as_str().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => key == taint.key && toleration["value"].as_str().unwrap_or_default() == taint.value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_toleration_of_every_taint_admits_a_virtual_kubelet_node_that_affinity_then_refuses() {
        let vk = NodeIdentity::virtual_kubelet("vk");
        let open =
            spec("nodeSelector: {kubernetes.io/os: linux}\ntolerations: [{operator: Exists}]");
        assert!(vk.admits_spec(&open));
        let mut kept_off = open.clone();
        kept_off["affinity"] = spec(
            "nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: \
             [{matchExpressions: [{key: type, operator: NotIn, values: [virtual-kubelet]}]}]}}",
        );
        assert!(!vk.admits_spec(&kept_off));
        assert!(
            NodeIdentity::linux("n").admits_spec(&kept_off),
            "NotIn holds where the label is absent"
        );
    }

    #[test]
    fn taints_want_a_toleration_of_their_key_or_of_everything() {
        let vk = NodeIdentity::virtual_kubelet("vk");
        assert!(!vk.admits_spec(&spec("tolerations: [{key: other, operator: Exists}]")));
        assert!(vk.admits_spec(&spec(
            "tolerations: [{key: virtual-kubelet.io/provider, operator: Equal, value: mock}]"
        )));
        assert!(!vk.admits_spec(&spec(
            "tolerations: [{operator: Exists, effect: NoExecute}]"
        )));
        assert!(vk.admits_spec(&spec(
            "tolerations: [{operator: Exists, effect: NoSchedule}]"
        )));
    }

    #[test]
    fn terms_are_ored_and_selectors_anded() {
        let node = NodeIdentity::linux("n");
        let either = spec(
            "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: \
             {nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Exists}]}, \
             {matchExpressions: [{key: kubernetes.io/os, operator: In, values: [linux]}]}]}}}",
        );
        assert!(node.admits_spec(&either));
        assert!(!node.admits_spec(&spec(
            "nodeSelector: {kubernetes.io/os: linux, gpu: \"true\"}"
        )));
    }
}
