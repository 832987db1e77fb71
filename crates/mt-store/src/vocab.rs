//! The seed's value vocabularies (SPEC §5). Writers take these enums so only documented values
//! are ever written; readers return plain strings because legacy rows may hold other values
//! (e.g. `withdraw_method = 'autowithdraw_daemon'`), which are shown as they are.

use std::fmt;

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the seed's order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The stored text.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// Parses the stored text (exact match).
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// `attack_events.event_type`.
    EventType {
        /// Attack detected (webhook receiver).
        Start => "START",
        /// Attack ended (webhook receiver).
        End => "END",
        /// Prefix announced via BGP (auto-advertisement, manual, or seen changed).
        Advertise => "ADVERTISE",
        /// Prefix withdrawn from BGP.
        Withdraw => "WITHDRAW",
    }
}

vocabulary! {
    /// `attack_events.action_taken` (seed v2.3.0).
    ActionTaken {
        /// Cloudflare actively mitigating the attack.
        Mitigating => "mitigating",
        /// Cloudflare auto-announced the prefix.
        AutoAdvertised => "auto_advertised",
        /// Alert sent, no auto-mitigation.
        Notified => "notified",
        /// Attack ended, withdrawal delegated to autowithdraw.
        NotifiedAutowithdrawHandles => "notified_autowithdraw_handles",
        /// Withdrawn by autowithdraw.
        WithdrawnAuto => "withdrawn_auto",
        /// Withdrawn by an operator.
        WithdrawnManual => "withdrawn_manual",
        /// Withdrawn immediately (emergency).
        WithdrawnImmediate => "withdrawn_immediate",
        /// Announced by an operator.
        AdvertisedManual => "advertised_manual",
        /// Event being processed.
        Processing => "processing",
    }
}

vocabulary! {
    /// `withdrawal_history.withdraw_method`.
    WithdrawMethod {
        /// Withdrawn right away.
        Immediate => "immediate",
        /// Withdrawn by autowithdraw after the calm period (or a scheduled request).
        AutoScheduled => "auto_scheduled",
        /// Withdrawn by an operator.
        Manual => "manual",
    }
}

vocabulary! {
    /// `withdrawal_history.status`.
    WithdrawStatus {
        /// The withdrawal went through.
        Success => "success",
        /// The withdrawal failed.
        Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip() {
        for v in ActionTaken::ALL {
            assert_eq!(ActionTaken::parse(v.as_str()), Some(*v));
        }
        assert_eq!(EventType::ALL.len(), 4);
        assert_eq!(WithdrawMethod::parse("autowithdraw_daemon"), None);
    }
}
