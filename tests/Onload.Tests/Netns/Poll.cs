using System.Diagnostics;
using NUnit.Framework;

namespace Onload.Tests.Netns;

/// <summary>Waiting on a condition with a deadline, instead of sleeping a fixed time and hoping.</summary>
public static class Poll
{
    /// <summary>
    /// Checks <paramref name="condition"/> until it holds or <paramref name="deadline"/> passes, with short sleeps
    /// between checks; fails the test with "timed out waiting for <paramref name="what"/>".
    /// </summary>
    public static void Until(Func<bool> condition, TimeSpan deadline, string what)
    {
        ArgumentNullException.ThrowIfNull(condition);
        if (!TryUntil(condition, deadline))
            Assert.Fail($"timed out waiting for {what} (after {deadline.TotalSeconds:0.###} s)");
    }

    /// <summary>Like <see cref="Until"/> but returns false on timeout instead of failing.</summary>
    public static bool TryUntil(Func<bool> condition, TimeSpan deadline)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var clock = Stopwatch.StartNew();
        int sleepMs = 0;
        while (true)
        {
            if (condition())
                return true;
            if (clock.Elapsed >= deadline)
                return condition();
            // Spin briefly first (most waits here end within microseconds), then back off to 10 ms.
            if (sleepMs == 0)
                Thread.Yield();
            else
                Thread.Sleep(sleepMs);
            sleepMs = Math.Min(10, sleepMs + 1);
        }
    }
}
