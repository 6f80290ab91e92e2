// Preloaded into the Portkey gateway (node --import) so that it listens on 127.0.0.1 only: its command line has
// --port but no host option, and @hono/node-server listens on every interface when no host is given.
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
    if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
        if (args.length >= 2 && (args[1] === undefined || args[1] === null || args[1] === '0.0.0.0' || args[1] === '::')) {
            args[1] = '127.0.0.1';
        } else if (typeof args[1] !== 'string') {
            args.splice(1, 0, '127.0.0.1');
        }
    } else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined && !args[0].path) {
        args[0] = { ...args[0], host: '127.0.0.1' };
    }
    return listen.apply(this, args);
};
