//! `PUT /balloon`, `PATCH /balloon`, `PATCH /balloon/statistics` and the
//! answers of `GET /balloon` and `GET /balloon/statistics`, shaped as
//! Firecracker's. Free page hinting is not implemented: asking for it is
//! refused.

use devices::virtio::balloon::stats::GuestStats;
use serde::{Deserialize, Serialize};

/// `PUT /balloon` (and `GET /balloon`'s answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    /// Let the guest deflate under memory pressure.
    pub deflate_on_oom: bool,
    /// Seconds between statistics refreshes; 0 (the default) leaves the
    /// statistics off for the VM's life.
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
        check_interval(self.stats_polling_interval_s)?;
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

/// `PATCH /balloon/statistics`: a new statistics interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatsUpdate {
    /// Seconds between statistics refreshes.
    pub stats_polling_interval_s: u32,
}

impl BalloonStatsUpdate {
    /// The interval the device takes, if it fits.
    pub fn interval(&self) -> Result<u16, String> {
        check_interval(self.stats_polling_interval_s)
    }
}

/// The device counts the interval in 16 bits, as Firecracker does.
fn check_interval(seconds: u32) -> Result<u16, String> {
    u16::try_from(seconds).map_err(|_| {
        format!(
            "stats_polling_interval_s {seconds} is more than {} seconds",
            u16::MAX
        )
    })
}

fn check_amount(mib: u32) -> Result<(), String> {
    if mib > MAX_BALLOON_MIB {
        return Err(format!("amount_mib {mib} is more than {MAX_BALLOON_MIB}"));
    }
    Ok(())
}

/// `GET /balloon/statistics`: Firecracker's required fields, then the
/// guest's statistics it reported (only those).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalloonStatistics {
    /// Target, in 4 KiB pages.
    pub target_pages: u32,
    /// What the guest holds, in 4 KiB pages.
    pub actual_pages: u32,
    /// Target, in MiB.
    pub target_mib: u32,
    /// What the guest holds, in MiB.
    pub actual_mib: u32,
    /// What the guest last reported through the stats queue.
    #[serde(flatten)]
    pub guest: GuestStats,
}

impl BalloonStatistics {
    /// From the device's page counts and the guest's last report.
    pub fn new(target_pages: u32, actual_pages: u32, guest: GuestStats) -> Self {
        Self {
            target_pages,
            actual_pages,
            target_mib: target_pages / 256,
            actual_mib: actual_pages / 256,
            guest,
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
        assert!(stats.unwrap().validate().is_ok());
        let too_long =
            parse(r#"{"amount_mib":0,"deflate_on_oom":false,"stats_polling_interval_s":65536}"#);
        assert!(too_long
            .unwrap()
            .validate()
            .unwrap_err()
            .contains("stats_polling_interval_s 65536"));
        let hinting = parse(r#"{"amount_mib":0,"deflate_on_oom":false,"free_page_hinting":true}"#);
        assert!(hinting.unwrap().validate().is_err());
        assert!(parse(r#"{"amount_mib":1}"#)
            .unwrap_err()
            .contains("deflate_on_oom"));
        assert!(parse(r#"{"amount_mib":1,"deflate_on_oom":true,"x":1}"#).is_err());
        let huge = BalloonUpdate {
            amount_mib: MAX_BALLOON_MIB + 1,
        };
        assert!(huge.validate().is_err());
    }

    #[test]
    fn statistics_carry_only_what_the_guest_reported() {
        let guest = GuestStats {
            free_memory: Some(1 << 20),
            total_memory: Some(512 << 20),
            ..Default::default()
        };
        let json = serde_json::to_value(BalloonStatistics::new(512, 256, guest)).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        let mut want = [
            "target_pages",
            "actual_pages",
            "target_mib",
            "actual_mib",
            "free_memory",
            "total_memory",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(json["actual_mib"], 1);
        let update =
            |s: &str| serde_json::from_str::<BalloonStatsUpdate>(s).map_err(|e| e.to_string());
        assert_eq!(
            update(r#"{"stats_polling_interval_s":5}"#)
                .unwrap()
                .interval(),
            Ok(5)
        );
        assert!(update(r#"{"stats_polling_interval_s":70000}"#)
            .unwrap()
            .interval()
            .is_err());
        assert!(update(r#"{"stats_polling_interval_s":-1}"#).is_err());
        assert!(update(r#"{"stats_polling_interval_s":1,"x":1}"#).is_err());
        assert!(update("{}").is_err());
    }
}
