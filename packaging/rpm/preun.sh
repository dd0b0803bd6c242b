# kube-join-agent %preun ($1: 0 on erase, 1 or more on upgrade). On erase: stop and
# disable the agent, and lift its gate on kubelet (the runtime mask, or the drop-in
# used when kubelet's unit is in /etc), which a stopped agent leaves in place if it was
# mid-join. kubelet is not started: the next boot, or the administrator, decides.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now kube-join-agent.service >/dev/null 2>&1 || :
    reload=
    # A runtime mask of kubelet is the agent's doing (it never masks persistently).
    if [ "$(readlink /run/systemd/system/kubelet.service 2>/dev/null)" = /dev/null ]; then
        rm -f /run/systemd/system/kubelet.service
        reload=yes
    fi
    for gate in /run/systemd/system/*.service.d/50-kube-join-agent-gate.conf; do
        [ -e "$gate" ] || continue
        rm -f "$gate"
        rmdir "${gate%/*}" 2>/dev/null || :
        reload=yes
    done
    if [ -n "$reload" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || :
    fi
fi
