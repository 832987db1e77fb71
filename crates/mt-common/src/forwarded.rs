//! The client's address behind trusted reverse proxies (SPEC §6), one rule for the receiver
//! and the dashboard.
//!
//! Each proxy appends the address it received the request from to `X-Forwarded-For`, so only
//! the right-hand end of the list was written by machines we trust; the left-most entries are
//! whatever the client sent. The client is therefore the right-most address that is not itself
//! a trusted proxy, and the header is believed only when the TCP peer is a trusted proxy.

use std::net::IpAddr;

use ipnet::IpNet;

/// The client's address: `peer` itself unless it is in `trusted`; then, walking the
/// `X-Forwarded-For` values (`headers`, every occurrence in order, each comma-separated) from
/// the right, the first hop that is not in `trusted`. An unparsable hop stops the walk at the
/// last address believed (a proxy never writes one, so the client did). When every hop is
/// trusted, the left-most one.
pub fn client_ip<'a>(
    trusted: &[IpNet],
    peer: IpAddr,
    headers: impl IntoIterator<Item = &'a str>,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers.into_iter().flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
        let proxy = ip("10.0.0.2");
        // The client wrote "6.6.6.6" itself; the proxy appended the address it saw.
        assert_eq!(
            client_ip(&proxies, proxy, ["6.6.6.6, 198.51.100.9"]),
            ip("198.51.100.9")
        );
        // Two proxies in a row.
        assert_eq!(
            client_ip(&proxies, proxy, ["6.6.6.6, 198.51.100.9, 10.0.0.7"]),
            ip("198.51.100.9")
        );
        // The header repeated: one list, in order.
        assert_eq!(
            client_ip(&proxies, proxy, ["6.6.6.6", "198.51.100.9"]),
            ip("198.51.100.9")
        );
        // A peer that is not a proxy: the header is ignored.
        assert_eq!(
            client_ip(&proxies, ip("192.0.2.7"), ["198.51.100.9"]),
            ip("192.0.2.7")
        );
        // No header, or garbage at the right: the proxy itself.
        assert_eq!(client_ip(&proxies, proxy, []), proxy);
        assert_eq!(client_ip(&proxies, proxy, ["6.6.6.6, junk"]), proxy);
    }

    fn addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4).prop_map(|n| IpAddr::from([10, 0, 0, n])), // trusted
            any::<[u8; 4]>().prop_map(IpAddr::from),
        ]
    }

    proptest! {
        /// Whatever the client writes to the left, the answer is the right-most untrusted hop,
        /// never a hop to its left, and never a trusted proxy unless all are.
        #[test]
        fn the_client_cannot_choose_its_address(
            written in prop::collection::vec(any::<[u8; 4]>().prop_map(IpAddr::from), 0..4),
            appended in prop::collection::vec(addr(), 0..5),
            peer in addr(),
        ) {
            let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
            let trusted = |ip: &IpAddr| proxies.iter().any(|n| n.contains(ip));
            let chain: Vec<String> =
                written.iter().chain(appended.iter()).map(ToString::to_string).collect();
            let header = chain.join(", ");
            let got = client_ip(&proxies, peer, [header.as_str()]);
            let all: Vec<IpAddr> = written.iter().chain(appended.iter()).copied().collect();
            let expected = if !trusted(&peer) {
                peer
            } else {
                all.iter()
                    .rev()
                    .find(|h| !trusted(h))
                    .copied()
                    .or_else(|| all.first().copied())
                    .unwrap_or(peer)
            };
            prop_assert_eq!(got, expected);
            // What the client wrote counts only when everything to its right is a proxy.
            if let Some(i) = all.iter().rposition(|h| *h == got)
                && trusted(&peer)
            {
                prop_assert!(all[i + 1..].iter().all(trusted));
            }
        }
    }
}
