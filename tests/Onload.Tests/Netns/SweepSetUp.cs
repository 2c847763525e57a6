using NUnit.Framework;
using Onload.Tests.Netns;

namespace Onload.Tests;

/// <summary>Before any test of the assembly: remove namespaces and links that dead test runs left behind.</summary>
[SetUpFixture]
public sealed class SweepSetUp
{
    [OneTimeSetUp]
    public void SweepLeftoverNamespaces()
    {
        if (!Netns.Netns.IsRoot)
            return;
        foreach (var what in Netns.Netns.SweepLeftovers())
            TestContext.Progress.WriteLine($"swept leftover {what}");
    }
}
