/** Test helpers of the framework API, for tests in other packages (the CLI's): never the product entry. */
export {
  ApiTestCluster,
  BACKEND_ID,
  deadPort,
  MiB,
  NODE_ID,
  type RawRequest,
  type RawResponse,
  type RecordedResponse,
  TestApi,
  type TestNode,
} from './api-test-cluster.js';
