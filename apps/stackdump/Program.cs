using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Onload.Apps.StackDump;
using Onload.StackDump;

// How long one stack may take to answer before it is reported and the next asked.
const int AnswerTimeoutMs = 1000;

var jsonOption = new Option<bool>("--json") { Description = "one JSON document: an array of stacks, each with its VNIC, link, sockets and counters" };
var pidOption = new Option<int?>("--pid") { Description = "only the stack of this process", HelpName = "PID" };

var root = new RootCommand(
    "onload-stackdump: shows the user-level stacks of the programs running under onload-run in this network namespace: " +
    "each stack's interface, VNIC and link state, every TCP and UDP socket with its state, addresses, queues and " +
    "retransmits, and the stack's counters. It asks each program while it runs. Exit status: 0 when every stack " +
    "asked answered (also when there is none: \"no Onload stacks\"), 1 otherwise.")
{
    jsonOption, pidOption,
};

root.SetAction(parse =>
{
    bool json = parse.GetValue(jsonOption);
    int? only = parse.GetValue(pidOption);
    if (only is <= 0)
    {
        Console.Error.WriteLine($"onload-stackdump: --pid {only}: not a process id");
        return 1;
    }

    IReadOnlyList<int> pids;
    try
    {
        pids = StackFinder.Pids();
    }
    catch (IOException e)
    {
        Console.Error.WriteLine($"onload-stackdump: cannot list this namespace's stacks: {e.Message}");
        return 1;
    }
    if (only is int wanted)
    {
        if (!pids.Contains(wanted))
        {
            Console.Error.WriteLine($"onload-stackdump: pid {wanted} has no Onload stack in this network namespace");
            return 1;
        }
        pids = [wanted];
    }

    var stacks = new List<StackSnapshot>();
    int failed = 0;
    foreach (int pid in pids)
    {
        if (StackClient.Query(pid, AnswerTimeoutMs, out string error) is { } snapshot)
            stacks.Add(snapshot);
        else
        {
            failed++;
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"onload-stackdump: pid {pid}: {error}"));
        }
    }

    if (pids.Count == 0)
        // With --json the document stays valid (an empty array) and the line goes to stderr.
        (json ? Console.Error : Console.Out).WriteLine("no Onload stacks");
    if (json)
        Console.Out.WriteLine(JsonSerializer.Serialize(stacks, StackDumpJson.Default.ListStackSnapshot));
    else
        for (int i = 0; i < stacks.Count; i++)
        {
            if (i > 0)
                Console.Out.WriteLine();
            TablePrinter.Print(stacks[i], Console.Out);
        }
    return failed == 0 ? 0 : 1;
});

return root.Parse(args).Invoke();
