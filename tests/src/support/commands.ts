// The command runner every package's tests share lives in @shale/testing.
export { type CommandResult, mustRun, runCommand, TOOL_PATH } from '@shale/testing';
