//! Which certificates may join as nodes, beyond chaining to the cluster CA: optionally only
//! the node names an operator lists, and never a certificate whose serial is revoked (a lost
//! laptop's certificate can be shut out without a new CA).

/// The operator's word on who may join (`[agents] nodes` and `revoked_serials`).
#[derive(Debug, Clone, Default)]
pub struct NodeAdmission {
    /// When set, only these node names may join.
    pub nodes: Option<Vec<String>>,
    /// Certificate serials refused, as `switchyard certs` prints them (`74:21:...`, any case,
    /// colons optional).
    pub revoked_serials: Vec<String>,
}

fn normalized(serial: &str) -> String {
    serial
        .chars()
        .filter(|c| *c != ':')
        .flat_map(char::to_lowercase)
        .collect()
}

impl NodeAdmission {
    /// Why the certificate for `node` with `serial` may not join, if it may not.
    pub fn check(&self, node: &str, serial: &str) -> Result<(), String> {
        if self.revoked_serials.iter().any(|r| normalized(r) == normalized(serial)) {
            return Err(format!(
                "the certificate for node '{node}' (serial {serial}) is revoked in the controller's [agents] revoked_serials; \
                 issue a new one with `switchyard certs issue --node {node}`"
            ));
        }
        if let Some(nodes) = &self.nodes
            && !nodes.iter().any(|n| n == node)
        {
            return Err(format!(
                "node '{node}' is not among the controller's [agents] nodes ({}); add it there to let it join",
                nodes.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::NodeAdmission;

    #[test]
    fn listed_names_join_and_revoked_serials_do_not_however_written() {
        let open = NodeAdmission::default();
        assert!(open.check("anything", "01:02").is_ok());
        let admission = NodeAdmission {
            nodes: Some(vec!["m4".into(), "xeon".into()]),
            revoked_serials: vec!["AB:CD:01".into()],
        };
        assert!(admission.check("xeon", "12:34").is_ok());
        let refused = admission.check("ryzen", "12:34").expect_err("not listed");
        assert!(refused.contains("[agents] nodes (m4, xeon)"), "{refused}");
        let revoked = admission.check("xeon", "ab:cd:01").expect_err("revoked");
        assert!(revoked.contains("revoked"), "{revoked}");
        assert!(admission.check("xeon", "abcd01").is_err());
    }
}
