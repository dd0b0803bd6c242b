//! Installing the built .deb/.rpm into test nodes, as users do.
