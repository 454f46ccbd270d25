//! Quiet hours: when SMS, WhatsApp and Messenger must wait.
//!
//! The window is a local time of day in the customer's timezone (or the
//! biller's), and may wrap midnight (`21:00-08:00`). Time zones come from
//! jiff's bundled tz database, so daylight-saving changes are right.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::domain::ChannelName;

/// `start-end` in local time; sends are held from `start` until `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: Time,
    pub end: Time,
}

impl FromStr for QuietHours {
    type Err = String;

    fn from_str(s: &str) -> Result<QuietHours, String> {
        let bad = || format!("\"{s}\" is not a window like 21:00-08:00 (24-hour local times)");
        let (start, end) = s.split_once('-').ok_or_else(bad)?;
        let time = |t: &str| -> Result<Time, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            Time::new(h, m, 0, 0).map_err(|_| bad())
        };
        let window = QuietHours {
            start: time(start)?,
            end: time(end)?,
        };
        if window.start == window.end {
            return Err(format!(
                "\"{s}\" starts and ends at the same time; leave quiet_hours out instead"
            ));
        }
        Ok(window)
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start.strftime("%H:%M"), self.end.strftime("%H:%M"))
    }
}

impl QuietHours {
    /// Channels that wait; email is read when the customer chooses.
    pub fn applies_to(channel: ChannelName) -> bool {
        !matches!(channel, ChannelName::Email)
    }

    fn contains(&self, t: Time) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// If `now_ms` falls in the window in `tz`, when (in ms) it ends.
    pub fn held_until(&self, tz: &TimeZone, now_ms: i64) -> Option<i64> {
        let now = Timestamp::from_millisecond(now_ms).ok()?.to_zoned(tz.clone());
        if !self.contains(now.time()) {
            return None;
        }
        let mut end = now.date().to_datetime(self.end).to_zoned(tz.clone()).ok()?;
        if end <= now {
            end = now
                .date()
                .tomorrow()
                .ok()?
                .to_datetime(self.end)
                .to_zoned(tz.clone())
                .ok()?;
        }
        Some(end.timestamp().as_millisecond())
    }
}

/// Looks up an IANA time zone name (`America/Mexico_City`).
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("\"{name}\" is not an IANA time zone like America/Mexico_City"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, local: &str) -> i64 {
        let dt: jiff::civil::DateTime = local.parse().unwrap();
        dt.to_zoned(time_zone(tz).unwrap())
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    #[test]
    fn windows_parse_and_refuse_nonsense() {
        let w: QuietHours = "21:00-08:00".parse().unwrap();
        assert_eq!(w.to_string(), "21:00-08:00");
        for bad in [
            "21-08",
            "25:00-08:00",
            "21:00",
            "21:00-21:00",
            "ab:cd-08:00",
            "21:60-08:00",
        ] {
            assert!(bad.parse::<QuietHours>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_over_midnight_holds_until_the_morning_in_the_customers_zone() {
        let w: QuietHours = "21:00-08:00".parse().unwrap();
        let mx = time_zone("America/Mexico_City").unwrap();
        let tz = "America/Mexico_City";
        assert_eq!(
            w.held_until(&mx, at(tz, "2026-11-20T22:30")),
            Some(at(tz, "2026-11-21T08:00"))
        );
        assert_eq!(
            w.held_until(&mx, at(tz, "2026-11-21T03:00")),
            Some(at(tz, "2026-11-21T08:00"))
        );
        assert_eq!(
            w.held_until(&mx, at(tz, "2026-11-21T21:00")),
            Some(at(tz, "2026-11-22T08:00"))
        );
        assert_eq!(
            w.held_until(&mx, at(tz, "2026-11-21T08:00")),
            None,
            "the window opens at 08:00"
        );
        assert_eq!(w.held_until(&mx, at(tz, "2026-11-21T20:59")), None);
        // 22:30 in Mexico City is 04:30 UTC: the same instant is quiet there, not in Berlin.
        let berlin = time_zone("Europe/Berlin").unwrap();
        assert_eq!(
            w.held_until(&berlin, at(tz, "2026-11-20T22:30")),
            Some(at("Europe/Berlin", "2026-11-21T08:00"))
        );
        assert_eq!(
            w.held_until(&berlin, at(tz, "2026-11-20T10:00")),
            None,
            "17:00 in Berlin"
        );
    }

    #[test]
    fn a_window_within_one_day_and_a_daylight_saving_night() {
        let lunch: QuietHours = "12:00-14:00".parse().unwrap();
        let tz = time_zone("Europe/Madrid").unwrap();
        assert_eq!(
            lunch.held_until(&tz, at("Europe/Madrid", "2026-06-01T13:00")),
            Some(at("Europe/Madrid", "2026-06-01T14:00"))
        );
        assert_eq!(lunch.held_until(&tz, at("Europe/Madrid", "2026-06-01T14:00")), None);
        // Clocks go forward at 02:00 on 2026-03-29 in Madrid: the night is an hour shorter.
        let night: QuietHours = "21:00-08:00".parse().unwrap();
        let held = night.held_until(&tz, at("Europe/Madrid", "2026-03-28T22:00")).unwrap();
        assert_eq!(held, at("Europe/Madrid", "2026-03-29T08:00"));
        assert_eq!(held - at("Europe/Madrid", "2026-03-28T22:00"), 9 * 3_600_000);
    }

    #[test]
    fn only_sms_whatsapp_and_messenger_wait() {
        assert!(!QuietHours::applies_to(ChannelName::Email));
        assert!(QuietHours::applies_to(ChannelName::Sms));
        assert!(QuietHours::applies_to(ChannelName::Whatsapp));
        assert!(QuietHours::applies_to(ChannelName::Messenger));
    }
}
