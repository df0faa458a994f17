//! The balancing strategies a configuration can name.

/// How the balancer picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    LeastConn,
    WeightedRoundRobin,
    IpHash,
    Cookie,
    P2cEwma,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 6] = [
        StrategyKind::RoundRobin,
        StrategyKind::LeastConn,
        StrategyKind::WeightedRoundRobin,
        StrategyKind::IpHash,
        StrategyKind::Cookie,
        StrategyKind::P2cEwma,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::LeastConn => "least-conn",
            StrategyKind::WeightedRoundRobin => "weighted-round-robin",
            StrategyKind::IpHash => "ip-hash",
            StrategyKind::Cookie => "cookie",
            StrategyKind::P2cEwma => "p2c-ewma",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}
