export { type Command, dispatch, helpText } from './command.js';
export { rootCommand, SHALE_VERSION } from './root.js';
