# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ps_agent_global_optspecs
    string join \n pin-dir= state-dir= h/help V/version
end

function __fish_ps_agent_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ps_agent_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ps_agent_using_subcommand
    set -l cmd (__fish_ps_agent_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ps-agent -n "__fish_ps_agent_needs_command" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_needs_command" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_needs_command" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -s V -l version -d 'Print version'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "run" -d 'Load, attach and enforce until SIGINT/SIGTERM, then detach'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "report" -d 'What enforcing would cut now: the flows dry-run would have dropped, busiest first, with the nearest matrix row'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "stats" -d 'Show the counters of the running agent'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "reload" -d 'Recompile the running agent\'s config and swap its policy atomically (as SIGHUP); a bad config is rejected and the running policy stays. Exit 1 if rejected'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "enforce" -d 'Switch the running agent to enforce. With --confirm-within it goes back to dry-run unless `ps-agent confirm` arrives in time (so a lock-out undoes itself)'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "confirm" -d 'Confirm a pending `enforce --confirm-within` (nothing to do if already enforcing)'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "dry-run" -d 'Switch the running agent to dry-run (and cancel a pending confirm)'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "flows" -d 'List the tracked outbound flows (like `conntrack -L`)'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "check" -d 'Validate the config and print the compiled rule set; exit 1 on error'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "doctor" -d 'Check this host before loading anything; exit 0 all pass, 3 warnings only, 1 a failure'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "install" -d 'Install the binary, a default (dry-run) config and the systemd unit'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "uninstall" -d 'Stop and remove the service, binary, unit, pins and state (the config stays)'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "unload" -d 'Remove what a (crashed) agent left: pins under --pin-dir and the state file'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "export" -d 'Render the compiled rule set for nftables, iptables or firewalld (hosts without XDP)'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "explain" -d 'The verdict the compiled policy gives a packet (or every frame of a capture), with the rule and matrix rows or the drop reason — computed by the kernel\'s own classifier'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "matrix" -d 'Port-matrix documents and policy files: import, diff'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "completions" -d 'Shell completions on stdout (the packages install them)'
complete -c ps-agent -n "__fish_ps_agent_needs_command" -f -a "generate" -d 'Write the man pages, completions and default config the packages ship, under DIR (`ps-agent generate --out packaging` in the source tree)'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -s c -l config -d 'Site config (default: /etc/ps-agent/config.toml if present, else the shipped PS 8.1.2 matrix with its defaults)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -s i -l iface -d 'Interface to enforce on (repeat; default: eth0 and eth1 where present)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -l xdp-mode -d 'XDP attach mode (native falls back to skb where the driver has no XDP)' -r -f -a "native\t'Native (driver) mode, falling back to generic where the driver has no XDP'
skb\t'Generic (skb) mode'"
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -l metrics -d 'Serve OpenMetrics on GET /metrics; alone: 127.0.0.1:9487 (give an address to listen elsewhere)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -l metrics-web-config -d 'TLS and basic auth of the metrics endpoint: a web config in the exporter-toolkit format (overrides the site config\'s `metrics_web_config`; docs/metrics.md)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -l dry-run -d 'Pass everything; count and log what would be dropped'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -l force -d 'Replace XDP programs other tools attached through netlink (a bpf_link cannot be)'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand report" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand report" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand report" -l json -d 'JSON output'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand report" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand stats" -l interval -d 'Refresh interval in seconds (with --watch)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand stats" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand stats" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand stats" -l json -d 'One JSON object instead of a table'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand stats" -l watch -d 'Refresh until interrupted'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand stats" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand reload" -l timeout -d 'Seconds to wait for the agent\'s answer' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand reload" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand reload" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand reload" -l json -d 'JSON output: what was done and whether anything changed'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand reload" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand enforce" -l confirm-within -d 'E.g. 300s, 5m' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand enforce" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand enforce" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand enforce" -l json -d 'JSON output: what was done and whether anything changed'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand enforce" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand confirm" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand confirm" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand confirm" -l json -d 'JSON output: what was done and whether anything changed'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand confirm" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand dry-run" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand dry-run" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand dry-run" -l json -d 'JSON output: what was done and whether anything changed'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand dry-run" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand flows" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand flows" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand flows" -l json -d 'JSON output'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand flows" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand check" -s c -l config -d 'Site config' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand check" -s i -l iface -d 'Interface (repeat; default: eth0, eth1)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand check" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand check" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand check" -l json -d 'JSON output'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand check" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand doctor" -s i -l iface -d 'Interface to check (repeat; default: eth0 and eth1 where present)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand doctor" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand doctor" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand doctor" -l json -d 'JSON output'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l root -d 'Staging root prefixed to every path (packaging, tests)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l prefix -d 'The binary goes to PREFIX/sbin/ps-agent' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l config-dir -d 'Where config.toml lives' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l unit-dir -d 'Where the systemd unit goes' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l no-enable -d 'Do not enable the unit'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -l json -d 'JSON output: what was done and whether anything changed'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand install" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l root -d 'Staging root prefixed to every path (packaging, tests)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l prefix -d 'The binary goes to PREFIX/sbin/ps-agent' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l config-dir -d 'Where config.toml lives' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l unit-dir -d 'Where the systemd unit goes' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l purge -d 'Also remove the config directory'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -l json -d 'JSON output: what was done and whether anything changed'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand uninstall" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand unload" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand unload" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand unload" -l force -d 'Even if the agent in the state file is still running'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand unload" -l json -d 'JSON output: what was done and whether anything changed'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand unload" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand export" -l format -d 'Target firewall' -r -f -a "nftables\t'One `table inet ps_agent` for `nft -f`'
iptables\t'IPv4 rules for `iptables-restore`'
ip6tables\t'IPv6 rules for `ip6tables-restore`'
firewalld\t'Zone and service XML files'"
complete -c ps-agent -n "__fish_ps_agent_using_subcommand export" -s c -l config -d 'Site config' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand export" -s i -l iface -d 'Interface (repeat; default: eth0, eth1)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand export" -s o -l output -d 'Write here instead of stdout (firewalld: a directory, gets services/ and zones/)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand export" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand export" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l proto -d 'Transport' -r -f -a "tcp\t'TCP'
udp\t'UDP'
icmp\t'ICMP (ICMPv6 for an IPv6 source)'"
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l dport -d 'Destination port (TCP/UDP)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l sport -d 'Source port' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l icmp-type -d 'ICMP/ICMPv6 type (with --proto icmp)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l src -d 'Source address (IPv6 makes an IPv6 packet)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l dst -d 'Destination address' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l iface -d 'Arrival interface (default: the first enforced interface)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l flags -d 'TCP flags, e.g. S, SA, A, FA (default S)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -s c -l config -d 'Site config' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l pcap -d 'Replay a pcap or pcapng capture (Ethernet, raw IP, Linux cooked v1/v2) and summarize per flow; frames the capture marks as sent by this host are skipped' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l local -d 'This host\'s own address: its frames in a two-way capture without direction (Ethernet) are skipped (repeat)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -l json -d 'JSON output'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and not __fish_seen_subcommand_from import diff" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and not __fish_seen_subcommand_from import diff" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and not __fish_seen_subcommand_from import diff" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and not __fish_seen_subcommand_from import diff" -f -a "import" -d 'Read an Avaya port matrix (tables copied out of the PDF/DOCX as tab-separated text) and write the policy file; exit 1 if a row cannot be read (unless --allow-partial)'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and not __fish_seen_subcommand_from import diff" -f -a "diff" -d 'Rows added, removed and changed between two matrices (policy files, or matrix documents as text, which are imported first)'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -l product -d 'Product name (default: the document\'s title)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -l id-prefix -d 'Row id prefix (default: initials of the host system, e.g. `ps`)' -r
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -s o -l output -d 'Write here instead of stdout' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -l format -d 'Output format' -r -f -a "toml\t''
json\t''"
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -l allow-partial -d 'Write what could be read even if some rows could not (they are listed)'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from diff" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from diff" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from diff" -l json -d 'JSON output'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand matrix; and __fish_seen_subcommand_from diff" -s h -l help -d 'Print help'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand completions" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand completions" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ps-agent -n "__fish_ps_agent_using_subcommand generate" -l out -d 'The packaging directory' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand generate" -l pin-dir -d 'Where `run` pins its maps (and `stats` finds them)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand generate" -l state-dir -d 'Where `run` writes its state file (and `stats` reads it)' -r -F
complete -c ps-agent -n "__fish_ps_agent_using_subcommand generate" -s h -l help -d 'Print help'
