# kube-join-agent %postun ($1: 0 on erase, 1 or more on upgrade). rpm has no purge:
# on erase the runtime directory (it may hold a JoinConfiguration, which carries the
# token) and the state (attempt count, last error: of no use without the agent) go,
# and so does /etc/kube-join-agent if empty (the administrator's files there are
# kept). An upgrade restarts an agent that is running, on the new binary.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 0 ]; then
    rm -rf /run/kube-join-agent /var/lib/kube-join-agent
    rmdir /etc/kube-join-agent/config.d 2>/dev/null || :
    rmdir /etc/kube-join-agent 2>/dev/null || :
else
    systemctl try-restart kube-join-agent.service >/dev/null 2>&1 || :
fi
