namespace Onload.Stack.Icmp;

/// <summary>A token bucket in nanoseconds, as the kernel limits ICMP errors (icmp_global_allow).</summary>
public struct TokenBucket
{
    private readonly long _nsPerToken;
    private readonly long _burst;
    private long _tokens;
    private long _last;

    public TokenBucket(int perSecond, int burst)
    {
        _nsPerToken = perSecond <= 0 ? long.MaxValue : 1_000_000_000L / perSecond;
        _burst = Math.Max(1, burst);
        _tokens = _burst;
        _last = 0;
    }

    public bool TryTake(long now)
    {
        if (_nsPerToken == long.MaxValue)
            return false;
        long earned = (now - _last) / _nsPerToken;
        if (earned > 0)
        {
            _tokens = Math.Min(_burst, _tokens + earned);
            _last += earned * _nsPerToken;
        }
        if (_last > now || now - _last > _burst * _nsPerToken)
            _last = now;
        if (_tokens == 0)
            return false;
        _tokens--;
        return true;
    }
}
