# %post of the ps-agent .rpm: what %systemd_post ps-agent.service expands to in RHEL 8's
# and 9's macros.systemd. On a first install, apply the preset, which
# /usr/lib/systemd/system-preset/80-ps-agent.preset says is "enable". systemd's own file
# trigger runs daemon-reload for units installed in /usr/lib/systemd/system.
if [ $1 -eq 1 ]; then
    systemctl --no-reload preset ps-agent.service >/dev/null 2>&1 || :
fi
