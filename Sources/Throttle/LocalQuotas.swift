/// The quotas a node applies alone while Redis cannot be reached: each cluster-wide quota
/// divided by the number of live delivery nodes last seen, so that together the nodes stay
/// within it (PRODUCT.md invariant 4). Plain state, owned by the throttle actor.
struct LocalQuotas {
    /// Per quota name: the GCRA theoretical arrival time, or the current window and its count (µs).
    private var arrival: [String: Int64] = [:]
    private var windows: [String: (index: Int64, used: Int)] = [:]

    /// Takes one unit from every quota at `1/nodes` of its size, or nothing and how long until
    /// all allow one.
    mutating func take(_ keys: [QuotaKey], nodes: Int, now: Int64) -> Duration? {
        var wait: Int64 = 0
        for key in keys {
            switch key.quota {
            case .rate(let rate):
                let interval = Int64(rate.emissionInterval / .microseconds(1)) * Int64(nodes)
                let burst = Int64(max(1, rate.burst / nodes))
                let tat = max(arrival[key.name] ?? now, now)
                if tat + interval - interval * burst > now { wait = max(wait, tat + interval - interval * burst - now) }
            case .perWindow(let count, let window):
                let length = Int64(window / .microseconds(1))
                let index = now / length
                let used = windows[key.name].flatMap { $0.index == index ? $0.used : nil } ?? 0
                if used >= max(1, count / nodes) { wait = max(wait, (index + 1) * length - now) }
            }
        }
        if wait > 0 { return .microseconds(wait) }
        for key in keys {
            switch key.quota {
            case .rate(let rate):
                let interval = Int64(rate.emissionInterval / .microseconds(1)) * Int64(nodes)
                arrival[key.name] = max(arrival[key.name] ?? now, now) + interval
            case .perWindow(_, let window):
                let index = now / Int64(window / .microseconds(1))
                let used = windows[key.name].flatMap { $0.index == index ? $0.used : nil } ?? 0
                windows[key.name] = (index, used + 1)
            }
        }
        return nil
    }

    mutating func reset() {
        arrival.removeAll()
        windows.removeAll()
    }
}
