//! What the firewall tests ask of an ensure.

use mtuvisor::firewall::{EnsureReport, Ensured, FirewallError};

/// One result for all of a report's families: the first error, else
/// `Installed` if any family changed.
pub fn overall(report: EnsureReport) -> Result<Ensured, FirewallError> {
    let mut result = Ensured::Unchanged;
    for (_, r) in report.families {
        if r? == Ensured::Installed {
            result = Ensured::Installed;
        }
    }
    Ok(result)
}
