//! Default prices for common public models, kept in one data file
//! (`usage/assets/pricing.yaml`, embedded in the binary), under the config's `pricing:`.
//!
//! The config's entries win by exact name; defaults fill in the rest, so a config that
//! prices nothing still gets sensible costs for `gpt-4o-mini` and friends, and the
//! counterfactual cost has a price for the reference model.

use slmgate_policies::pricing::PriceTable;

/// The embedded default price file.
pub const DEFAULT_PRICES_YAML: &str = include_str!("../assets/pricing.yaml");

/// The embedded default prices.
pub fn defaults() -> PriceTable {
    // The file is part of the source and tested below; an error here is a build defect,
    // so fall back to no defaults rather than refusing to start.
    serde_norway::from_str(DEFAULT_PRICES_YAML).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the embedded default price file is invalid");
        PriceTable::default()
    })
}

/// `configured` over the defaults: configured entries replace defaults of the same name.
pub fn merged(configured: &PriceTable) -> PriceTable {
    let mut table = defaults();
    for (name, price) in &configured.models {
        table.models.insert(name.clone(), *price);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_are_valid() {
        let t: PriceTable = serde_norway::from_str(DEFAULT_PRICES_YAML).unwrap();
        assert!(t.validate(&[]).is_empty());
        assert!(t.models.len() > 20);
        assert_eq!(t.price("gpt-4o").map(|p| p.output), Some(10.0));
        // Globs catch dated variants.
        assert!(t.price("claude-3-5-sonnet-20241022").is_some());
        assert_eq!(t.price("local").map(|p| p.input), Some(0.0));
    }

    #[test]
    fn config_entries_override_defaults() {
        let cfg: PriceTable = serde_norway::from_str(
            "gpt-4o: { input: 1, output: 2 }\nmine: { input: 3, output: 4 }",
        )
        .unwrap();
        let t = merged(&cfg);
        assert_eq!(t.price("gpt-4o").map(|p| p.output), Some(2.0));
        assert_eq!(t.price("mine").map(|p| p.input), Some(3.0));
        assert!(t.price("gpt-4o-mini").is_some());
    }
}
