namespace Onload.Stack.Tcp;

/// <summary>
/// CUBIC's congestion avoidance (RFC 9438), in segments. The stack owns slow start and recovery; this only says
/// where the window goes after a congestion event and how it grows on each ACK in congestion avoidance.
/// </summary>
public struct CubicState
{
    /// <summary>RFC 9438 §4.1: C = 0.4, β_cubic = 0.7; §4.3: α_cubic = 3 (1 − β) / (1 + β).</summary>
    public const double C = 0.4;
    public const double Beta = 0.7;
    public const double Alpha = 3 * (1 - Beta) / (1 + Beta);

    /// <summary>The window just before the last reduction (W_max), and the one before that (fast convergence, §4.7).</summary>
    public double WMax;
    public double WLastMax;
    /// <summary>When the current congestion avoidance epoch began (ns), 0 = not yet.</summary>
    public long EpochStart;
    public double K;
    public double Origin;
    /// <summary>The Reno-friendly estimate W_est (§4.3).</summary>
    public double WEst;

    /// <summary>A congestion event with the window at <paramref name="cwnd"/> segments: returns ssthresh (§4.6, §4.7).</summary>
    public double OnCongestion(double cwnd)
    {
        WMax = cwnd < WLastMax ? cwnd * (1 + Beta) / 2 : cwnd; // fast convergence: release bandwidth to newer flows
        WLastMax = cwnd;
        EpochStart = 0;
        return Math.Max(cwnd * Beta, 2);
    }

    /// <summary>W_cubic(t) = C (t − K)³ + W_max (§4.2), t in seconds since the epoch began.</summary>
    public readonly double Window(double t) => C * Math.Pow(t - K, 3) + Origin;

    /// <summary>One ACK of <paramref name="acked"/> segments in congestion avoidance: the new window (§4.2–§4.4).</summary>
    public double OnAck(double cwnd, double acked, long now, long rttNs)
    {
        if (EpochStart == 0)
        {
            EpochStart = now;
            if (cwnd < WMax)
            {
                K = Math.Cbrt((WMax - cwnd) / C);
                Origin = WMax;
            }
            else
            {
                K = 0; // no reduction to recover from (e.g. slow start ended at ssthresh): grow from here
                Origin = cwnd;
            }
            WEst = cwnd;
        }
        double t = (now - EpochStart) / 1e9;
        double target = Math.Clamp(Window(t + rttNs / 1e9), cwnd, 1.5 * cwnd);
        // §4.3: W_est grows as Reno would with CUBIC's β; α becomes 1 once it passes W_max.
        WEst += (WEst >= WMax ? 1 : Alpha) * acked / cwnd;
        if (Window(t) < WEst)
            return Math.Max(cwnd, WEst); // the Reno-friendly region
        return cwnd + (target - cwnd) / cwnd * acked;
    }
}
