//! `PUT /balloon`, `PATCH /balloon` and the answers of `GET /balloon` and
//! `GET /balloon/statistics`, shaped as Firecracker's. Statistics polling
//! (the stats queue) and free page hinting are not implemented: asking for
//! them is refused.

use serde::{Deserialize, Serialize};

/// `PUT /balloon` (and `GET /balloon`'s answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    /// Let the guest deflate under memory pressure.
    pub deflate_on_oom: bool,
    /// Seconds between statistics refreshes; only 0 (off) is supported.
    #[serde(default)]
    pub stats_polling_interval_s: u32,
    /// Not supported: must be false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub free_page_hinting: bool,
    /// Offer free page reporting: the guest hands its free pages back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub free_page_reporting: bool,
}

/// Most MiB a balloon may ask for: its target in 4 KiB pages fits in the
/// 32-bit `num_pages`.
pub const MAX_BALLOON_MIB: u32 = u32::MAX / 256;

impl Balloon {
    /// Refuses the features tandem lacks and impossible sizes.
    pub fn validate(&self) -> Result<(), String> {
        check_amount(self.amount_mib)?;
        if self.stats_polling_interval_s != 0 {
            return Err(
                "balloon statistics (stats_polling_interval_s) are not supported by tandem yet"
                    .into(),
            );
        }
        if self.free_page_hinting {
            return Err("free_page_hinting is not supported by tandem yet".into());
        }
        Ok(())
    }
}

/// `PATCH /balloon`: a new target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
}

impl BalloonUpdate {
    /// Checks the size.
    pub fn validate(&self) -> Result<(), String> {
        check_amount(self.amount_mib)
    }
}

fn check_amount(mib: u32) -> Result<(), String> {
    if mib > MAX_BALLOON_MIB {
        return Err(format!("amount_mib {mib} is more than {MAX_BALLOON_MIB}"));
    }
    Ok(())
}

/// `GET /balloon/statistics`: Firecracker's required fields (the ones the
/// device knows without a stats queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalloonStatistics {
    /// Target, in 4 KiB pages.
    pub target_pages: u32,
    /// What the guest holds, in 4 KiB pages.
    pub actual_pages: u32,
    /// Target, in MiB.
    pub target_mib: u32,
    /// What the guest holds, in MiB.
    pub actual_mib: u32,
}

impl BalloonStatistics {
    /// From the device's page counts.
    pub fn from_pages(target_pages: u32, actual_pages: u32) -> Self {
        Self {
            target_pages,
            actual_pages,
            target_mib: target_pages / 256,
            actual_mib: actual_pages / 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_parts_are_refused() {
        let parse = |s: &str| serde_json::from_str::<Balloon>(s).map_err(|e| e.to_string());
        let ok = parse(r#"{"amount_mib":64,"deflate_on_oom":true}"#).unwrap();
        assert!(ok.validate().is_ok());
        let stats =
            parse(r#"{"amount_mib":0,"deflate_on_oom":false,"stats_polling_interval_s":1}"#);
        assert!(stats
            .unwrap()
            .validate()
            .unwrap_err()
            .contains("statistics"));
        assert!(parse(r#"{"amount_mib":1}"#)
            .unwrap_err()
            .contains("deflate_on_oom"));
        assert!(parse(r#"{"amount_mib":1,"deflate_on_oom":true,"x":1}"#).is_err());
        let huge = BalloonUpdate {
            amount_mib: MAX_BALLOON_MIB + 1,
        };
        assert!(huge.validate().is_err());
        assert_eq!(BalloonStatistics::from_pages(512, 256).actual_mib, 1);
    }
}
