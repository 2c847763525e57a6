using Onload.Tests.Interop;

namespace Onload.Tests.Web;

/// <summary>onload-web-sample refuses what it cannot serve before it starts anything, with a line saying why.</summary>
public sealed class WebSampleUsageTests
{
    [TestCase("--transport carrier-pigeon", "expected onload or kernel")]
    [TestCase("--transport onload", "needs --interface IF")]
    [TestCase("--transport onload --vnic af_xdp:nothere --addr 10.0.0.2", "expected IP/PREFIX")]
    [TestCase("--transport onload --vnic af_xdp:nothere", "needs both Vnic and Address")]
    [TestCase("--interface eth0 --mode sideways", "expected shared or exclusive")]
    public void Bad_options_exit_2_with_the_reason(string options, string reason)
    {
        var r = Netns.Netns.Exec(Dist.Bin("onload-web-sample"), ["--urls", "http://*:8080", .. options.Split(' ')],
            TimeSpan.FromSeconds(30));

        Assert.That(r.ExitCode, Is.EqualTo(2), r.Stdout + r.Stderr);
        Assert.That(r.Stderr, Does.Contain(reason));
    }
}
