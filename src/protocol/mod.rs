//! Wire protocol: the handshake codec and the RPING echo.
